"""Benchmark Report v0.2 export: results.observability and results.request_performance.time_series.

Synthetic cell (synth.py): measure window [10, 70] s, one sample per second from ts 8 to 71 on source
"engine-0"; KV usage alternates 0.8x / 1.0x of kv_usage (0.8x on even ts), running = level 8,
waiting = 2, prefix-cache hits = 25 % of queries. Clock origin: created_at 2026-01-01T00:00:00Z.
"""

import json

import pandas as pd
import pytest

from analysis.synth import SynthCell, write_run
from kvbench.analysis.br_export import cell_report
from kvbench.analysis.load import load_run
from kvbench.results.records import RequestRecord


def load_cell(tmp_path, **fields):
    run = load_run(write_run(tmp_path / "run", [SynthCell(**fields)]))
    return run, run.cells[0]


def server_row(ts_s, source, metric, value, **labels):
    return {
        "ts_s": ts_s,
        "source": source,
        "metric": metric,
        "labels": json.dumps(labels),
        "value": value,
    }


def test_engine_component_gauges_and_hit_rate_over_the_measure_window(tmp_path):
    run, cell = load_cell(tmp_path, kv_usage=0.5, offload_bytes_per_s=1000.0)
    observability = cell_report(run, cell)["results"]["observability"]
    [engine] = observability["components"]
    assert engine["component_label"] == "emulated-no-offload"  # the stack's engine label
    assert engine["replica_id"] == "engine-0"
    aggregate = engine["aggregate"]
    kv = aggregate["kv_cache_usage"]  # ts 10..70: 31 samples of 0.4 (even ts), 30 of 0.5
    assert kv["units"] == "fraction"
    assert kv["mean"] == pytest.approx((31 * 0.4 + 30 * 0.5) / 61)
    assert (kv["min"], kv["p50"], kv["max"]) == pytest.approx((0.4, 0.4, 0.5))
    assert aggregate["cache_hit_rate"] == {"units": "fraction", "mean": pytest.approx(0.25)}
    assert (
        aggregate["running_requests"]["mean"] == 8
        and aggregate["running_requests"]["units"] == "count"
    )
    assert aggregate["waiting_requests"]["max"] == 2
    assert set(aggregate) == {
        "kv_cache_usage",
        "cache_hit_rate",
        "running_requests",
        "waiting_requests",
    }
    series = engine["time_series"]["kv_cache_usage"]["series"]
    assert len(series) == 61
    assert series[0] == {"ts": "2026-01-01T00:00:10+00:00", "value": pytest.approx(0.4)}
    assert series[-1]["ts"] == "2026-01-01T00:01:10+00:00"
    # offload bytes have no v0.2 slot: not exported under any key
    text = json.dumps(observability)
    assert "GPU_to_CPU" not in text and "transfer" not in text and "bytes" not in text


def test_one_component_per_source_with_the_router_by_its_own_name(tmp_path):
    run, cell = load_cell(tmp_path, kv_usage=0.5)
    extra = [
        server_row(ts, "router", "vllm:num_requests_waiting", ts - 10.0)
        for ts in (9.0, 10.0, 11.0, 12.0)
    ]
    extra += [
        server_row(ts, "engine-0", "kvbench:cpu_kv_cache_usage_perc", 0.25, tier="cpu")
        for ts in (10.0, 20.0)
    ]
    cell.server = pd.concat([cell.server, pd.DataFrame(extra)], ignore_index=True)
    components = cell_report(run, cell)["results"]["observability"]["components"]
    assert [c["replica_id"] for c in components] == ["engine-0", "router"]
    router = components[1]
    assert router["component_label"] == "router"
    # ts 9 is before the window: samples 0, 1, 2
    assert set(router["aggregate"]) == {"waiting_requests"}
    assert router["aggregate"]["waiting_requests"]["mean"] == pytest.approx(1.0)
    assert "time_series" not in router
    assert components[0]["aggregate"]["cpu_cache_usage"]["mean"] == pytest.approx(0.25)


def test_no_server_metrics_means_no_observability(tmp_path):
    run, cell = load_cell(tmp_path, kv_usage=None)
    assert "observability" not in cell_report(run, cell)["results"]


def request_row(cell_id, i, sent_s, first_s, itl_ms):
    end_s = first_s + sum(itl_ms) / 1000
    return RequestRecord(
        request_id=f"r{i}",
        conversation_id=f"c{i}",
        turn_index=0,
        cell_id=cell_id,
        scheduled_s=sent_s,
        sent_s=sent_s,
        first_token_s=first_s,
        end_s=end_s,
        ttft_ms=(first_s - sent_s) * 1000,
        e2e_ms=(end_s - sent_s) * 1000,
        itl_ms=itl_ms,
        prompt_tokens=16,
        output_tokens=len(itl_ms) + 1,
        level=8,
    ).to_row()


def test_request_time_series_in_one_second_bins(tmp_path):
    run, cell = load_cell(tmp_path, kv_usage=None)
    cell.info.measure_start_s, cell.info.measure_end_s = 10.0, 12.5
    cell.requests = pd.DataFrame(
        [
            request_row(
                cell.cell_id, 1, 10.0, 10.2, [100.0, 100.0]
            ),  # tokens 10.2 10.3 10.4, ends 10.4
            request_row(
                cell.cell_id, 2, 10.5, 11.1, [500.0, 500.0]
            ),  # tokens 11.1 11.6 12.1, ends 12.1
            request_row(cell.cell_id, 3, 11.0, 11.4, []),  # one token at 11.4, ends 11.4
        ]
    )
    time_series = cell_report(run, cell)["results"]["request_performance"]["time_series"]
    ts = ["2026-01-01T00:00:10+00:00", "2026-01-01T00:00:11+00:00", "2026-01-01T00:00:12+00:00"]
    throughput = time_series["throughput"]
    # bins [10,11) [11,12) [12,12.5): the last is half a second wide
    assert throughput["request_rate"] == {
        "units": "queries/s",
        "series": [
            {"ts": ts[0], "value": 1.0},
            {"ts": ts[1], "value": 1.0},
            {"ts": ts[2], "value": 2.0},
        ],
    }
    assert throughput["output_token_rate"] == {
        "units": "tokens/s",
        "series": [
            {"ts": ts[0], "value": 3.0},
            {"ts": ts[1], "value": 3.0},
            {"ts": ts[2], "value": 2.0},
        ],
    }
    ttft = time_series["latency"]["time_to_first_token"]
    assert ttft["units"] == "ms"
    assert [p["ts"] for p in ttft["series"]] == ts[:2]  # no first token in the last bin
    assert [p["mean"] for p in ttft["series"]] == pytest.approx([200.0, 500.0])
    assert (ttft["series"][1]["min"], ttft["series"][1]["max"]) == pytest.approx((400.0, 600.0))
