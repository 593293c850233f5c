"""Export cells as llm-d-benchmark Benchmark Report v0.2 documents (one YAML per cell).

Field names follow llm-d-benchmark `llmdbenchmark/analysis/benchmark_report/schema_v0_2.py`:
version "0.2"; run{uid, eid, cid, pid, time{start, end, duration}, description, keywords};
scenario{stack[{metadata, standardized, native}], load{metadata, standardized, native}};
results.request_performance.aggregate{requests{total, failures, input_length, output_length},
throughput{input_token_rate, output_token_rate, total_token_rate, request_rate},
latency{time_to_first_token, inter_token_latency, time_per_output_token,
normalized_time_per_output_token, request_latency}}. A Statistics object is units + mean, stddev,
min, p0p1, p1, p5, p10, p25, p50, p75, p90, p95, p99, p99p9, max. Units are the schema's strings
(count, ms, ms/token, tokens/s, queries/s). NTPOT = e2e / output_tokens (includes the first token).

results.request_performance.time_series{latency{time_to_first_token}, throughput{request_rate,
output_token_rate}}: TimeSeriesData{units, series[{ts, value | mean, min, max ...}]} over 1 s bins of
the measure window (the last bin may be shorter; rates divide by its true width). A request counts
where it completes, its TTFT where its first token arrives, its output tokens where each one arrives
(first token, then the ITL gaps). Bins with no TTFT have no latency point. `ts` is the bin start as
ISO-8601 UTC (the run's clock origin + ts_s).
results.observability.components[]: one ComponentObservability per metrics `source` of
server_metrics.parquet ("engine-0", "router"...): component_label is the stack's engine label for
engine sources (replica_id the source) and the source name otherwise; aggregate ResourceMetrics over
the measure window: kv_cache_usage, cpu_cache_usage (fractions; gauge samples), running_requests,
waiting_requests (count; gauge samples), cache_hit_rate (fraction, mean only: prefix-cache hits /
queries counter increases); time_series.kv_cache_usage. v0.2 has no slot (and no native block in
observability) for external prefix-cache hits or offload bytes, so they are not exported.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from kvbench.analysis.load import CellData, RunData, measure_requests
from kvbench.analysis.metrics import measure_window_s, ok_requests
from kvbench.analysis.server import (
    KV_USAGE,
    PREFIX_HITS,
    PREFIX_QUERIES,
    RUNNING,
    WAITING,
    counter_increase,
    in_window,
)
from kvbench.results.records import Phase, RequestStatus
from kvbench.results.summary import latency_values_ms

BR_VERSION = "0.2"
TIME_SERIES_BIN_S = 1.0
CPU_KV_USAGE = "kvbench:cpu_kv_cache_usage_perc"  # the emulator's CPU-tier usage gauge (0-1)
BR_PERCENTILES = (
    ("p0p1", 0.1),
    ("p1", 1),
    ("p5", 5),
    ("p10", 10),
    ("p25", 25),
    ("p50", 50),
    ("p75", 75),
    ("p90", 90),
    ("p95", 95),
    ("p99", 99),
    ("p99p9", 99.9),
)


def statistics(values, units: str) -> dict | None:
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    if len(data) == 0:
        return None
    stats = {
        "units": units,
        "mean": float(data.mean()),
        "stddev": float(data.std(ddof=0)),
        "min": float(data.min()),
        "max": float(data.max()),
    }
    for key, q in BR_PERCENTILES:
        stats[key] = float(np.percentile(data, q))
    return stats


def _rate(value: float | None, units: str) -> dict | None:
    return None if value is None else {"units": units, "mean": float(value)}


def _hash(*parts) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


def _iso_duration(start: str | None, end: str | None) -> str | None:
    if start is None or end is None:
        return None
    try:
        seconds = (
            datetime.fromisoformat(end.replace("Z", "+00:00"))
            - datetime.fromisoformat(start.replace("Z", "+00:00"))
        ).total_seconds()
    except (AttributeError, ValueError):
        return None
    return f"PT{seconds}S"


def cell_report(run: RunData, cell: CellData) -> dict:
    info, summary = cell.info, cell.summary
    window = measure_window_s(cell)
    ok = ok_requests(measure_requests(cell))
    ok_records = [
        r
        for r in cell.records
        if r.phase == Phase.MEASURE.value and r.status == RequestStatus.OK.value
    ]
    latencies = latency_values_ms(ok_records)
    out_tokens = np.asarray([r.output_tokens for r in ok_records], dtype=float)
    in_tokens = np.asarray([r.prompt_tokens for r in ok_records], dtype=float)
    e2e = np.asarray([math.nan if r.e2e_ms is None else r.e2e_ms for r in ok_records], dtype=float)
    ntpot = np.where(out_tokens > 0, e2e / np.where(out_tokens > 0, out_tokens, 1), np.nan)
    total_rate = (
        summary.prompt_tokens_per_s + summary.output_tokens_per_s
        if summary.prompt_tokens_per_s is not None and summary.output_tokens_per_s is not None
        else None
    )
    aggregate = {
        "requests": _drop_none(
            {
                "total": summary.requests_ok + summary.requests_failed,
                "failures": summary.requests_failed,
                "input_length": statistics(in_tokens, "count"),
                "output_length": statistics(out_tokens, "count"),
            }
        ),
        "throughput": _drop_none(
            {
                "input_token_rate": _rate(summary.prompt_tokens_per_s, "tokens/s"),
                "output_token_rate": _rate(summary.output_tokens_per_s, "tokens/s"),
                "total_token_rate": _rate(total_rate, "tokens/s"),
                "request_rate": _rate(summary.request_rate_rps, "queries/s"),
            }
        ),
        "latency": _drop_none(
            {
                "time_to_first_token": statistics(latencies["ttft"], "ms"),
                "inter_token_latency": statistics(latencies["itl"], "ms/token"),
                "time_per_output_token": statistics(latencies["tpot"], "ms/token"),
                "normalized_time_per_output_token": statistics(ntpot, "ms/token"),
                "request_latency": statistics(latencies["e2e"], "ms"),
            }
        ),
    }
    manifest = run.manifest
    return {
        "version": BR_VERSION,
        "run": _drop_none(
            {
                "uid": _hash(manifest.run_name, manifest.created_at, info.cell_id),
                "eid": _hash(manifest.run_name, manifest.created_at),
                "cid": _hash(manifest.host.hostname) if manifest.host.hostname else None,
                "pid": _hash(manifest.run_name, "kvbench-client"),
                "time": _drop_none(
                    {
                        "start": info.started_at,
                        "end": info.ended_at,
                        "duration": _iso_duration(info.started_at, info.ended_at),
                    }
                )
                or None,
                "description": f"kvbench cell {info.cell_id}: {manifest.system_under_test.description}",
                "keywords": ["kvbench", info.scenario, info.model, manifest.system_under_test.kind],
            }
        ),
        "scenario": {"stack": [_engine_component(run, cell)], "load": _load(run, cell)},
        "results": _drop_none(
            {
                "request_performance": _drop_none(
                    {
                        "aggregate": aggregate,
                        "time_series": _request_time_series(ok, window, _clock_origin(manifest)),
                    }
                ),
                "observability": _observability(
                    cell, window, _engine_label(run, cell), _clock_origin(manifest)
                ),
            }
        ),
    }


def _engine_component(run: RunData, cell: CellData) -> dict:
    info = cell.info
    sut = run.manifest.system_under_test
    return {
        "metadata": {
            "schema_version": "0.0.1",
            "label": _engine_label(run, cell),
            "cfg_id": _hash(info.scenario, sorted(info.scenario_params.items())),
            "description": sut.description,
        },
        "standardized": {
            "kind": "inference_engine",
            "tool": "kvbench-emulator" if sut.emulated else "vllm",
            "tool_version": str(run.manifest.versions.get("vllm", run.manifest.kvbench_version)),
            "role": "replica",
            "replicas": 1,
            "model": {"name": info.model},
        },
        "native": {"config": {"scenario": info.scenario, "scenario_params": info.scenario_params}},
    }


def _engine_label(run: RunData, cell: CellData) -> str:
    return f"{run.manifest.system_under_test.kind}-{cell.info.scenario}"


def _load(run: RunData, cell: CellData) -> dict:
    info = cell.info
    ok = ok_requests(measure_requests(cell))
    prompt = pd.to_numeric(ok["prompt_tokens"], errors="coerce") if len(ok) else pd.Series([0.0])
    standardized = {
        "tool": "kvbench",
        "tool_version": run.manifest.kvbench_version,
        "parallelism": 1,
        "source": "random",
        "stage": 0,
        "input_seq_len": {
            "distribution": "other",
            "value": float(prompt.mean()) if len(prompt) else 0.0,
        },
    }
    if info.strategy == "concurrent":
        standardized["concurrency"] = int(info.level)
    else:
        standardized["rate_qps"] = float(info.level)
    return {
        "metadata": {"schema_version": "0.0.1", "cfg_id": _hash(run.manifest.spec.get("workload"))},
        "standardized": standardized,
        "native": {
            "config": {
                "workload": run.manifest.spec.get("workload"),
                "load": run.manifest.spec.get("load"),
            }
        },
    }


def _drop_none(mapping: dict) -> dict:
    return {k: v for k, v in mapping.items() if v is not None}


def export_run(run: RunData, out_dir: Path) -> list[Path]:
    """One `<cell_id>.yaml` per cell that has measure-phase requests."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for cell in run.cells:
        if measure_requests(cell).empty:
            continue
        path = out_dir / f"{cell.cell_id}.yaml"
        path.write_text(yaml.safe_dump(cell_report(run, cell), sort_keys=False))
        written.append(path)
    return written


# ---- time series and observability (results.request_performance.time_series, results.observability)


def _clock_origin(manifest) -> datetime:
    """Wall-clock time of ts_s == 0: the manifest's clock_origin_unix_s, else its created_at."""
    origin_s = manifest.clock_origin_unix_s
    if origin_s is not None:
        return datetime.fromtimestamp(float(origin_s), tz=UTC)
    return datetime.fromisoformat(manifest.created_at.replace("Z", "+00:00")).astimezone(UTC)


def _iso(origin: datetime, ts_s: float) -> str:
    return (origin + timedelta(seconds=float(ts_s))).isoformat()


def _bins(window: tuple[float, float]) -> list[tuple[float, float]]:
    """[start, end) bins of TIME_SERIES_BIN_S covering the window; the last one may be shorter."""
    count = math.ceil((window[1] - window[0]) / TIME_SERIES_BIN_S - 1e-9)
    starts = [window[0] + k * TIME_SERIES_BIN_S for k in range(count)]
    return [(s, min(s + TIME_SERIES_BIN_S, window[1])) for s in starts]


def _bin_index(times_s: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Bin of each time (-1 outside the window)."""
    inside = (times_s >= window[0]) & (times_s < window[1])  # NaN is outside
    index = np.full(len(times_s), -1)
    index[inside] = np.floor((times_s[inside] - window[0]) / TIME_SERIES_BIN_S).astype(int)
    return index


def _token_times_s(ok: pd.DataFrame) -> np.ndarray:
    """Arrival time of every output token: the first token, then the ITL gaps after it."""
    times: list[np.ndarray] = []
    for first_s, itl, end_s, n_out in zip(
        ok["first_token_s"], ok["itl_ms"], ok["end_s"], ok["output_tokens"]
    ):
        gaps = np.asarray(itl if itl is not None else [], dtype=float) / 1000.0
        if first_s is not None and not pd.isna(first_s) and len(gaps) + 1 == n_out:
            times.append(float(first_s) + np.concatenate(([0.0], np.cumsum(gaps))))
        elif n_out and not pd.isna(n_out) and end_s is not None and not pd.isna(end_s):
            times.append(
                np.full(int(n_out), float(end_s))
            )  # no per-token timing: all at completion
    return np.concatenate(times) if times else np.zeros(0)


def _rate_series(event_times_s: np.ndarray, window, origin: datetime, units: str) -> dict:
    bins = _bins(window)
    counts = np.bincount(_bin_index(event_times_s, window) + 1, minlength=len(bins) + 1)[1:]
    return {
        "units": units,
        "series": [
            {"ts": _iso(origin, start), "value": float(counts[k] / (end - start))}
            for k, (start, end) in enumerate(bins)
        ],
    }


def _ttft_series(ok: pd.DataFrame, window, origin: datetime) -> dict | None:
    first = pd.to_numeric(ok["first_token_s"], errors="coerce").to_numpy(dtype=float)
    ttft = pd.to_numeric(ok["ttft_ms"], errors="coerce").to_numpy(dtype=float)
    index = _bin_index(first, window)
    points = []
    for k, (start, _) in enumerate(_bins(window)):
        values = ttft[(index == k) & ~np.isnan(ttft)]
        if len(values):
            points.append(
                {
                    "ts": _iso(origin, start),
                    "mean": float(values.mean()),
                    "min": float(values.min()),
                    "max": float(values.max()),
                }
            )
    return {"units": "ms", "series": points} if points else None


def _request_time_series(ok: pd.DataFrame, window, origin: datetime) -> dict | None:
    if window is None or ok.empty:
        return None
    ends = pd.to_numeric(ok["end_s"], errors="coerce").to_numpy(dtype=float)
    ttft = _ttft_series(ok, window, origin)
    return _drop_none(
        {
            "latency": {"time_to_first_token": ttft} if ttft else None,
            "throughput": {
                "request_rate": _rate_series(ends, window, origin, "queries/s"),
                "output_token_rate": _rate_series(_token_times_s(ok), window, origin, "tokens/s"),
            },
        }
    )


def _gauge(frame: pd.DataFrame, metric: str, units: str) -> dict | None:
    rows = frame[frame["metric"] == metric]
    return statistics(pd.to_numeric(rows["value"], errors="coerce"), units) if len(rows) else None


def _hit_rate(frame: pd.DataFrame, window) -> dict | None:
    hits, queries = (
        counter_increase(frame, PREFIX_HITS, window),
        counter_increase(frame, PREFIX_QUERIES, window),
    )
    if math.isnan(hits) or math.isnan(queries) or queries <= 0:
        return None
    return {"units": "fraction", "mean": hits / queries}


def _component(
    source: str, rows: pd.DataFrame, window, engine_label: str, origin: datetime
) -> dict | None:
    inside = in_window(rows, window)
    aggregate = _drop_none(
        {
            "kv_cache_usage": _gauge(inside, KV_USAGE, "fraction"),
            "cache_hit_rate": _hit_rate(rows, window),
            "cpu_cache_usage": _gauge(inside, CPU_KV_USAGE, "fraction"),
            "running_requests": _gauge(inside, RUNNING, "count"),
            "waiting_requests": _gauge(inside, WAITING, "count"),
        }
    )
    if not aggregate:
        return None
    kv = inside[inside["metric"] == KV_USAGE].sort_values("ts_s")
    out = {
        "component_label": engine_label if source.startswith("engine") else source,
        "replica_id": source,
        "aggregate": aggregate,
    }
    if len(kv):
        out["time_series"] = {
            "kv_cache_usage": {
                "units": "fraction",
                "series": [
                    {"ts": _iso(origin, ts), "value": float(v)}
                    for ts, v in zip(kv["ts_s"], kv["value"])
                ],
            }
        }
    return out


def _observability(cell: CellData, window, engine_label: str, origin: datetime) -> dict | None:
    server = cell.server
    if server.empty:
        return None
    components = [
        _component(str(source), rows, window, engine_label, origin)
        for source, rows in server.groupby("source", sort=True)
    ]
    components = [c for c in components if c is not None]
    return {"components": components} if components else None
