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
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from kvbench.analysis.load import CellData, RunData, measure_requests
from kvbench.analysis.metrics import latency_values_ms, measure_window_s, ok_requests

BR_VERSION = "0.2"
BR_PERCENTILES = (("p0p1", 0.1), ("p1", 1), ("p5", 5), ("p10", 10), ("p25", 25), ("p50", 50), ("p75", 75),
                  ("p90", 90), ("p95", 95), ("p99", 99), ("p99p9", 99.9))


def statistics(values, units: str) -> dict | None:
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    if len(data) == 0:
        return None
    stats = {"units": units, "mean": float(data.mean()), "stddev": float(data.std(ddof=0)),
             "min": float(data.min()), "max": float(data.max())}
    for key, q in BR_PERCENTILES:
        stats[key] = float(np.percentile(data, q))
    return stats


def _rate(value: float, units: str) -> dict | None:
    return None if math.isnan(value) else {"units": units, "mean": float(value)}


def _hash(*parts) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


def _iso_duration(start: str | None, end: str | None) -> str | None:
    try:
        seconds = (datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    except (AttributeError, ValueError):
        return None
    return f"PT{seconds}S"


def cell_report(run: RunData, cell: CellData) -> dict:
    info = cell.info
    measured = measure_requests(cell)
    ok = ok_requests(measured)
    window = measure_window_s(cell, measured)
    window_s = (window[1] - window[0]) if window else math.nan
    latencies = latency_values_ms(ok)
    out_tokens = pd.to_numeric(ok["output_tokens"], errors="coerce").to_numpy(dtype=float)
    in_tokens = pd.to_numeric(ok["prompt_tokens"], errors="coerce").to_numpy(dtype=float)
    e2e = pd.to_numeric(ok["e2e_ms"], errors="coerce").to_numpy(dtype=float)
    ntpot = np.where(out_tokens > 0, e2e / np.where(out_tokens > 0, out_tokens, 1), np.nan)
    aggregate = {
        "requests": _drop_none({
            "total": int(len(measured)), "failures": int(len(measured) - len(ok)),
            "input_length": statistics(in_tokens, "count"), "output_length": statistics(out_tokens, "count"),
        }),
        "throughput": _drop_none({
            "input_token_rate": _rate(in_tokens.sum() / window_s, "tokens/s"),
            "output_token_rate": _rate(out_tokens.sum() / window_s, "tokens/s"),
            "total_token_rate": _rate((in_tokens.sum() + out_tokens.sum()) / window_s, "tokens/s"),
            "request_rate": _rate(len(ok) / window_s, "queries/s"),
        }),
        "latency": _drop_none({
            "time_to_first_token": statistics(latencies["ttft"], "ms"),
            "inter_token_latency": statistics(latencies["itl"], "ms/token"),
            "time_per_output_token": statistics(latencies["tpot"], "ms/token"),
            "normalized_time_per_output_token": statistics(ntpot, "ms/token"),
            "request_latency": statistics(latencies["e2e"], "ms"),
        }),
    }
    manifest = run.manifest
    return {
        "version": BR_VERSION,
        "run": _drop_none({
            "uid": _hash(manifest.run_name, manifest.created_at, info.cell_id),
            "eid": _hash(manifest.run_name, manifest.created_at),
            "cid": _hash(manifest.host.get("hostname", "localhost")) if manifest.host else None,
            "pid": _hash(manifest.run_name, "kvbench-client"),
            "time": _drop_none({"start": info.started_at, "end": info.ended_at,
                                "duration": _iso_duration(info.started_at, info.ended_at)}) or None,
            "description": f"kvbench cell {info.cell_id}: {manifest.system_under_test.description}",
            "keywords": ["kvbench", info.scenario, info.model, manifest.system_under_test.kind],
        }),
        "scenario": {"stack": [_engine_component(run, cell)], "load": _load(run, cell)},
        "results": {"request_performance": {"aggregate": aggregate}},
    }


def _engine_component(run: RunData, cell: CellData) -> dict:
    info = cell.info
    sut = run.manifest.system_under_test
    return {
        "metadata": {"schema_version": "0.0.1", "label": f"{sut.kind}-{info.scenario}",
                     "cfg_id": _hash(info.scenario, sorted(info.scenario_params.items())),
                     "description": sut.description},
        "standardized": {"kind": "inference_engine", "tool": "kvbench-emulator" if sut.emulated else "vllm",
                         "tool_version": str(run.manifest.versions.get("vllm", run.manifest.kvbench_version)),
                         "role": "replica", "replicas": 1, "model": {"name": info.model}},
        "native": {"config": {"scenario": info.scenario, "scenario_params": info.scenario_params}},
    }


def _load(run: RunData, cell: CellData) -> dict:
    info = cell.info
    ok = ok_requests(measure_requests(cell))
    prompt = pd.to_numeric(ok["prompt_tokens"], errors="coerce") if len(ok) else pd.Series([0.0])
    standardized = {
        "tool": "kvbench", "tool_version": run.manifest.kvbench_version, "parallelism": 1, "source": "random",
        "stage": 0, "input_seq_len": {"distribution": "other", "value": float(prompt.mean()) if len(prompt) else 0.0},
    }
    if info.strategy == "concurrent":
        standardized["concurrency"] = int(info.level)
    else:
        standardized["rate_qps"] = float(info.level)
    return {"metadata": {"schema_version": "0.0.1", "cfg_id": _hash(run.manifest.spec.get("workload"))},
            "standardized": standardized,
            "native": {"config": {"workload": run.manifest.spec.get("workload"), "load": run.manifest.spec.get("load")}}}


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
