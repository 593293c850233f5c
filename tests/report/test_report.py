"""End-to-end report building on synthetic and hand-made run directories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from analysis.synth import SynthCell, matrix, write_run
from kvbench.errors import UserError
from kvbench.report.build import build_report
from kvbench.results.layout import (
    CELL_FILE,
    MANIFEST_FILE,
    REQUESTS_FILE,
    CellInfo,
    CellRef,
    CellStatus,
    RunManifest,
    SystemUnderTest,
    cell_dir,
    make_cell_id,
    save_model,
)
from kvbench.results.records import REQUEST_SCHEMA, RequestRecord

TINY = [  # (ttft_ms, e2e_ms, output_tokens, end_s)
    (10.0, 110.0, 11, 1.0),
    (20.0, 220.0, 21, 2.0),
    (30.0, 130.0, 5, 3.0),
    (40.0, 440.0, 41, 4.0),
]


def tiny_run(tmp_path):
    """One cell, four requests with hand-picked numbers, a 10 s measure window, no server metrics."""
    cell_id = make_cell_id("Qwen/Qwen3-0.6B", "no-offload", 2, 0)
    cdir = cell_dir(tmp_path, cell_id)
    cdir.mkdir(parents=True)
    rows = [
        RequestRecord(
            request_id=f"r{i}",
            conversation_id=f"c{i}",
            turn_index=0,
            cell_id=cell_id,
            sent_s=end - e2e / 1000,
            end_s=end,
            ttft_ms=ttft,
            e2e_ms=e2e,
            itl_ms=[(e2e - ttft) / (n - 1)] * (n - 1),
            prompt_tokens=100,
            output_tokens=n,
        ).to_row()
        for i, (ttft, e2e, n, end) in enumerate(TINY)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA), cdir / REQUESTS_FILE)
    save_model(
        cdir / CELL_FILE,
        CellInfo(
            cell_id=cell_id,
            model="Qwen/Qwen3-0.6B",
            scenario="no-offload",
            base_scenario="no-offload",
            level=2,
            repeat=0,
            status=CellStatus.OK,
            measure_start_s=0.0,
            measure_end_s=10.0,
            started_at="2026-01-01T00:00:00+00:00",
            ended_at="2026-01-01T00:00:12+00:00",
        ),
    )
    save_model(
        tmp_path / MANIFEST_FILE,
        RunManifest(
            kvbench_version="0.0.0",
            run_name="tiny",
            created_at="2026-01-01T00:00:00Z",
            spec={"seed": 3},
            system_under_test=SystemUnderTest(
                kind="vllm", emulated=False, description="vLLM 0.11.2 on a test host"
            ),
            cells=[
                CellRef(
                    cell_id=cell_id,
                    model="Qwen/Qwen3-0.6B",
                    scenario="no-offload",
                    base_scenario="no-offload",
                    level=2,
                    repeat=0,
                    status=CellStatus.OK,
                )
            ],
        ),
    )
    return tmp_path, cell_id


def test_complete_metrics_csv_equals_hand_computed_percentiles(tmp_path):
    run_dir, _ = tiny_run(tmp_path)
    report = build_report(run_dir, ["csv"])
    row = pd.read_csv(report / "complete_metrics.csv").iloc[0]
    assert row["requests_ok"] == 4 and row["requests_failed"] == 0
    assert row["output_tok_s"] == pytest.approx((11 + 21 + 5 + 41) / 10.0)
    assert row["request_rate_rps"] == pytest.approx(0.4)
    # TTFT 10, 20, 30, 40: p50 = 25, p90 = 30 + 0.7 * 10 = 37, p99 = 30 + 0.97 * 10 = 39.7.
    assert (row["ttft_p50_ms"], row["ttft_p90_ms"], row["ttft_p99_ms"]) == pytest.approx(
        (25.0, 37.0, 39.7)
    )
    # TPOT = (e2e - ttft) / (n - 1): 10, 10, 25, 10 -> mean 13.75, p50 10, p90 = 10 + 0.7 * 15 = 20.5.
    assert (row["tpot_mean_ms"], row["tpot_p50_ms"], row["tpot_p90_ms"]) == pytest.approx(
        (13.75, 10.0, 20.5)
    )
    assert row["e2e_p50_ms"] == pytest.approx((130.0 + 220.0) / 2)


def test_benchmark_report_v02_has_required_keys_and_numbers(tmp_path):
    run_dir, cell_id = tiny_run(tmp_path)
    report = build_report(run_dir, ["br"])
    doc = yaml.safe_load((report / "br" / f"{cell_id}.yaml").read_text())
    assert doc["version"] == "0.2"
    assert {"uid", "eid", "pid", "time"} <= set(doc["run"])
    assert doc["run"]["time"]["duration"] == "PT12.0S"
    assert {"stack", "load"} <= set(doc["scenario"])
    assert doc["scenario"]["load"]["standardized"]["concurrency"] == 2
    agg = doc["results"]["request_performance"]["aggregate"]
    assert agg["requests"]["total"] == 4 and agg["requests"]["failures"] == 0
    assert agg["throughput"]["output_token_rate"] == {
        "units": "tokens/s",
        "mean": pytest.approx(7.8),
    }
    assert agg["throughput"]["request_rate"]["units"] == "queries/s"
    latency = agg["latency"]
    assert set(latency) == {
        "time_to_first_token",
        "inter_token_latency",
        "time_per_output_token",
        "normalized_time_per_output_token",
        "request_latency",
    }
    ttft = latency["time_to_first_token"]
    assert (
        ttft["units"] == "ms"
        and ttft["mean"] == 25.0
        and ttft["p50"] == 25.0
        and ttft["min"] == 10.0
    )
    assert {
        "p0p1",
        "p1",
        "p5",
        "p10",
        "p25",
        "p75",
        "p90",
        "p95",
        "p99",
        "p99p9",
        "max",
        "stddev",
    } <= set(ttft)
    assert latency["time_per_output_token"]["units"] == "ms/token"
    ntpot = [e2e / n for _, e2e, n, _ in TINY]
    assert latency["normalized_time_per_output_token"]["mean"] == pytest.approx(
        float(np.mean(ntpot))
    )


def test_full_report_on_synthetic_run(tmp_path):
    cells = matrix(
        ["Qwen/Qwen3-8B", "Qwen/Qwen3-14B"],
        ["no-offload", "native-offload"],
        [4, 8],
        3,
        no_offload=dict(noise_sd=0.01),
        native_offload=dict(
            noise_sd=0.01,
            throughput_factor=1.1,
            cpu_hit_tokens_per_request=16,
            offload_bytes_per_s=1e6,
        ),
    )
    cells.append(SynthCell(scenario="native-offload", level=16, status="failed"))
    report = build_report(write_run(tmp_path, cells), ["md", "csv", "png", "html"])
    text = (report / "REPORT.md").read_text()
    assert text.splitlines()[2].startswith("**System under test:** synthetic test run")
    assert "EMULATED" in text.splitlines()[2]
    assert "1 failed" in text and "## Validity checks" in text and "## Deployment guidance" in text
    assert (
        text.index("## Answer")
        < text.index("## Key findings")
        < text.index("## What was run")
        < text.index("## Validity checks")
        < text.index("## Peak throughput")
        < text.index("## Findings in detail")
    )
    for name in (
        "peak_throughput_all_scenarios.png",
        "throughput_curve_Qwen3-8B_all.png",
        "latency_comparison_all.png",
        "performance_delta_heatmap_all.png",
        "pcp_kv_cache_usage.png",
        "pcp_request_queues.png",
        "pcp_prefix_cache_hits.png",
        "pcp_memory_usage.png",
        "pcp_correlation_heatmap.png",
        "ttft_by_turn.png",
    ):
        assert (report / name).stat().st_size > 1000, name
        assert f"]({name})" in text
    peak = pd.read_csv(report / "peak_throughput_all.csv")
    assert set(peak["verdict"]) == {"baseline", "gain"}
    pcp = pd.read_csv(report / "pcp_metrics_peak.csv")
    assert pcp.loc[pcp["scenario"] == "native-offload", "offload_gpu_to_cpu_bytes"].gt(0).all()
    assert set(pd.read_csv(report / "pcp_summary_stats.csv")["scenario"]) == {
        "no-offload",
        "native-offload",
    }
    html = (report / "REPORT.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html


def test_guidellm_like_run_without_server_metrics_reports(tmp_path):
    cells = matrix(
        ["Qwen/Qwen3-8B"],
        ["no-offload", "lmcache-local"],
        [4, 8],
        1,
        no_offload=dict(kv_usage=None, client_lag_ms=None, cached_tokens=None),
        lmcache_local=dict(kv_usage=None, client_lag_ms=None, cached_tokens=None),
    )
    run_dir = write_run(tmp_path, cells, kind="guidellm-import", emulated=False)
    report = build_report(run_dir, ["md", "csv", "png"])
    text = (report / "REPORT.md").read_text()
    assert "No server metrics in this run" in text
    assert "Figure `pcp_kv_cache_usage.png` not drawn: no vllm:kv_cache_usage_perc samples" in text
    assert "FLAG** cached tokens reported" in text
    assert "memory pressure (Qwen/Qwen3-8B): skipped: no vllm:kv_cache_usage_perc samples" in text
    assert (report / "peak_throughput_all_scenarios.png").exists()


def test_bad_format_and_missing_run_dir_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--format"):
        build_report(tmp_path, ["pdf"])
    with pytest.raises(UserError, match="no such run directory"):
        build_report(tmp_path / "nope", ["md"])


@pytest.mark.parametrize(
    "cells", [[], [SynthCell(status="failed")]], ids=["no-cells", "all-failed"]
)
def test_run_without_any_successful_cell_still_reports(tmp_path, cells):
    report = build_report(write_run(tmp_path, cells), ["md", "csv", "png", "html", "br"])
    text = (report / "REPORT.md").read_text()
    assert "## Peak throughput" in text and "No successful cell." in text
    assert "Figure `peak_throughput_all_scenarios.png` not drawn: no successful cell" in text


def test_single_repeat_report_states_the_evidence_rule_and_the_same_verdicts_as_the_csvs(tmp_path):
    cells = [
        SynthCell(scenario="no-offload"),
        SynthCell(scenario="native-offload", throughput_factor=1.1, ttft_ms=35.0),
        SynthCell(scenario="llm-d-redis"),
        SynthCell(scenario="llm-d-valkey"),
    ]
    report = build_report(write_run(tmp_path, cells), ["md", "csv"])
    text = (report / "REPORT.md").read_text()
    validity = text[text.index("## Validity checks") : text.index("## Findings")]
    assert "- **A/A twin check** (Qwen3-8B): ok: equivalent configurations agree" in validity
    assert (
        "**This run has one repeat per scenario: every verdict below is at most indicative.**"
        in text
    )
    assert "confirm with repeats: 3" in text and "use **native-offload**" not in text
    peak = pd.read_csv(report / "peak_throughput_all.csv").set_index("scenario")
    assert (peak.loc["native-offload", "verdict"], peak.loc["native-offload", "evidence"]) == (
        "indicative gain",
        "single-run",
    )
    assert "| indicative gain | single-run |" in text
    latency = pd.read_csv(report / "latency_deltas.csv")
    row = latency[
        (latency.scenario == "native-offload")
        & (latency.statistic == "ttft_mean")
        & (latency.basis == "common")
    ]
    assert row["verdict"].item() == "indicative lower" and "*indicative lower*" in text
    hits = pd.read_csv(report / "ttft_hits_misses.csv")
    assert list(hits.columns[:7]) == [
        "model",
        "scenario",
        "level",
        "repeats",
        "hits",
        "misses",
        "unknown",
    ]
    assert "### TTFT of prefix hits vs misses" in text


def test_header_states_the_lmcache_remote_payload_scale_of_an_emulated_stack():
    from kvbench.report.markdown import _emulation_notes

    assert (
        "1/4,096 of the true KV size"
        in _emulation_notes({"lmcache_remote_payload_scale": 1 / 4096})[0]
    )
    assert (
        _emulation_notes({}) == [] and _emulation_notes({"lmcache_remote_payload_scale": 1.0}) == []
    )


def test_validity_table_shows_three_flags_per_check_and_counts_the_rest():
    from kvbench.analysis.validity import Check, CheckStatus
    from kvbench.report.validity_section import flag_rows as _flag_rows

    flags = [Check("reuse opportunity", CheckStatus.FLAG, f"cell{i}", "0% reuse") for i in range(5)]
    flags.append(Check("client keeps up", CheckStatus.FLAG, "cell9", "client-bound"))
    rows = _flag_rows(flags)
    assert [row[1] for row in rows] == ["cell0", "cell1", "cell2", "cell9", "2 more"]
    assert "2 more subjects" in rows[-1][2] and rows[-1][0] == "**FLAG** reuse opportunity"
