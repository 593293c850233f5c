"""Server-side metrics of a cell, from server_metrics.parquet (long format) and system_metrics.parquet.

Counters are read as increases over the measure window (per series: the sum of positive steps
between consecutive samples, starting from the last sample before the window, so a counter reset
does not produce a negative increase). Gauges are averaged per source, then averaged (KV usage,
memory) or summed (running / waiting requests: the system's totals) across sources.
Prometheus counters arrive with their `_total` sample name (vllm:prefix_cache_hits_total).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from kvbench.analysis.load import CellData, measure_requests
from kvbench.analysis.metrics import measure_window_s, ok_requests

KV_USAGE = "vllm:kv_cache_usage_perc"  # a 0-1 fraction despite the name
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"
CACHED_BY_SOURCE = "vllm:prompt_tokens_cached_by_source_total"
OFFLOAD_BYTES = (
    "vllm:kv_offload_total_bytes_total",
    "vllm:kv_offload_total_bytes",
)  # 0.16 name, by transfer_type
OFFLOAD_LOAD_BYTES = "vllm:kv_offload_load_bytes_total"  # 0.33 names
OFFLOAD_STORE_BYTES = "vllm:kv_offload_store_bytes_total"
RSS = "process_resident_memory_bytes"
STEP_LAG = "kvbench:engine_step_lag_seconds"
HOST_TIER_SOURCES = ("host",)
REMOTE_TIER_SOURCES = ("disk", "p2p", "external_unspecified")


def in_window(frame: pd.DataFrame, window: tuple[float, float] | None) -> pd.DataFrame:
    if frame.empty or window is None:
        return frame
    ts = pd.to_numeric(frame["ts_s"], errors="coerce")
    return frame[(ts >= window[0]) & (ts <= window[1])]


def series(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[frame["metric"] == metric]


def label_value(labels_json, key: str):
    if labels_json is None or (isinstance(labels_json, float) and math.isnan(labels_json)):
        return None
    try:
        return json.loads(labels_json).get(key)
    except (TypeError, ValueError):
        return None


def counter_increase(frame: pd.DataFrame, metric: str, window: tuple[float, float] | None) -> float:
    """Increase of a counter over the window, summed over sources/series (NaN: no series)."""
    totals = _increases(frame, metric, window, None)
    return totals.get("all", math.nan)


def counter_increase_by(
    frame: pd.DataFrame, metric: str, window: tuple[float, float] | None, by_label: str
) -> dict:
    """Increase of a counter over the window per value of label `by_label` ({}: no series)."""
    return _increases(frame, metric, window, by_label)


def _increases(
    frame: pd.DataFrame, metric: str, window: tuple[float, float] | None, by_label: str | None
) -> dict:
    rows = series(frame, metric)
    if rows.empty:
        return {}
    rows = rows.assign(ts=pd.to_numeric(rows["ts_s"], errors="coerce")).sort_values("ts")
    totals: dict = {}
    for (_, labels), group in rows.groupby(["source", "labels"], sort=False, dropna=False):
        increase = _series_increase(group, window)
        key = label_value(labels, by_label) if by_label else "all"
        totals[key] = totals.get(key, 0.0) + increase
    return totals


def _series_increase(group: pd.DataFrame, window: tuple[float, float] | None) -> float:
    ts = group["ts"].to_numpy()
    values = group["value"].to_numpy(dtype=float)
    if window is not None:
        before = np.nonzero(ts < window[0])[0]
        first = before[-1] if len(before) else 0
        keep = np.arange(len(ts)) >= first
        keep &= ts <= window[1]
        values = values[keep]
    if len(values) < 2:
        return 0.0
    steps = np.diff(values)
    # A reset (counter went down) restarts from zero: count the new value as the increase.
    return float(np.where(steps >= 0, steps, values[1:]).sum())


def gauge_stats(
    frame: pd.DataFrame, metric: str, window, combine: str = "mean"
) -> tuple[float, float]:
    """(mean, max): per-source mean over the window, combined across sources by mean or sum."""
    rows = in_window(series(frame, metric), window)
    if rows.empty:
        return math.nan, math.nan
    values = pd.to_numeric(rows["value"], errors="coerce")
    per_source = values.groupby(rows["source"]).mean()
    per_source_max = values.groupby(rows["source"]).max()
    if combine == "sum":
        return float(per_source.sum()), float(per_source_max.sum())
    return float(per_source.mean()), float(per_source_max.max())


def histogram_quantile(frame: pd.DataFrame, metric: str, q: float, window) -> float:
    """Quantile from `<metric>_bucket` increases over the window (linear inside a bucket, as Prometheus does)."""
    buckets = counter_increase_by(frame, f"{metric}_bucket", window, "le")
    if not buckets:
        return math.nan
    edges = sorted((float(le), count) for le, count in buckets.items() if le is not None)
    total = edges[-1][1] if edges else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    prev_edge, prev_count = 0.0, 0.0
    for edge, count in edges:
        if count >= rank:
            if math.isinf(edge):
                return prev_edge
            span = count - prev_count
            return prev_edge + (edge - prev_edge) * (
                (rank - prev_count) / span if span > 0 else 1.0
            )
        prev_edge, prev_count = edge, count
    return prev_edge


def step_lag_p99_s(cell: CellData, window) -> float:
    """Emulator engine step lag p99: from a histogram when exported as one, else from gauge samples."""
    from_hist = histogram_quantile(cell.server, STEP_LAG, 0.99, window)
    if not math.isnan(from_hist):
        return from_hist
    rows = in_window(series(cell.server, STEP_LAG), window)
    if rows.empty:
        return math.nan
    return float(np.percentile(pd.to_numeric(rows["value"], errors="coerce").dropna(), 99))


def tier_hits(cell: CellData, window) -> dict:
    """GPU / CPU / remote hit tokens and where the attribution came from."""
    ok = ok_requests(measure_requests(cell))
    if not ok.empty and ok[["cpu_hit_tokens", "remote_hit_tokens"]].notna().any().any():
        return {
            "gpu_hit_tokens": float(pd.to_numeric(ok["gpu_hit_tokens"], errors="coerce").sum()),
            "cpu_hit_tokens": float(pd.to_numeric(ok["cpu_hit_tokens"], errors="coerce").sum()),
            "remote_hit_tokens": float(
                pd.to_numeric(ok["remote_hit_tokens"], errors="coerce").sum()
            ),
            "tier_source": "per-request tier tokens",
        }
    by_source = counter_increase_by(cell.server, CACHED_BY_SOURCE, window, "source")
    if by_source:
        return {
            "gpu_hit_tokens": by_source.get("device", 0.0),
            "cpu_hit_tokens": sum(by_source.get(s, 0.0) for s in HOST_TIER_SOURCES),
            "remote_hit_tokens": sum(by_source.get(s, 0.0) for s in REMOTE_TIER_SOURCES),
            "tier_source": CACHED_BY_SOURCE,
        }
    external = counter_increase(cell.server, EXTERNAL_HITS, window)
    if not math.isnan(external):
        local = counter_increase(cell.server, PREFIX_HITS, window)
        return {
            "gpu_hit_tokens": local,
            "cpu_hit_tokens": external,
            "remote_hit_tokens": math.nan,
            "tier_source": f"{EXTERNAL_HITS} (CPU and remote not separated)",
        }
    return {
        "gpu_hit_tokens": math.nan,
        "cpu_hit_tokens": math.nan,
        "remote_hit_tokens": math.nan,
        "tier_source": "none",
    }


def offload_bytes(cell: CellData, window) -> dict:
    by_type: dict = {}
    for name in OFFLOAD_BYTES:
        for key, value in counter_increase_by(cell.server, name, window, "transfer_type").items():
            by_type[key] = by_type.get(key, 0.0) + value
    store = counter_increase(cell.server, OFFLOAD_STORE_BYTES, window)
    load = counter_increase(cell.server, OFFLOAD_LOAD_BYTES, window)
    to_cpu = by_type.get("GPU_to_CPU", math.nan)
    to_gpu = by_type.get("CPU_to_GPU", math.nan)
    if not math.isnan(store):
        to_cpu = store if math.isnan(to_cpu) else to_cpu + store
    if not math.isnan(load):
        to_gpu = load if math.isnan(to_gpu) else to_gpu + load
    return {"offload_gpu_to_cpu_bytes": to_cpu, "offload_cpu_to_gpu_bytes": to_gpu}


def gpu_utilization_pct(cell: CellData, window) -> float:
    rows = in_window(cell.system, window)
    if rows.empty:
        return math.nan
    mask = rows["metric"].astype(str).str.contains("gpu", case=False) & rows["metric"].astype(
        str
    ).str.contains("util", case=False)
    values = pd.to_numeric(rows.loc[mask, "value"], errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def server_row(cell: CellData) -> dict:
    """One row of pcp_metrics_peak.csv (any cell; the report uses the peak cells)."""
    window = measure_window_s(cell)
    server = cell.server
    kv_mean, kv_max = gauge_stats(server, KV_USAGE, window)
    run_mean, _ = gauge_stats(server, RUNNING, window, combine="sum")
    wait_mean, _ = gauge_stats(server, WAITING, window, combine="sum")
    rss_mean, rss_max = gauge_stats(server, RSS, window)
    hits = counter_increase(server, PREFIX_HITS, window)
    queries = counter_increase(server, PREFIX_QUERIES, window)
    tiers = tier_hits(cell, window)
    all_hits = sum(v for k, v in tiers.items() if k.endswith("_hit_tokens") and not math.isnan(v))
    row = {
        "cell_id": cell.cell_id,
        "model": cell.info.model,
        "scenario": cell.info.scenario,
        "level": cell.info.level,
        "repeat": cell.info.repeat,
        "has_server_metrics": not server.empty,
        "kv_usage_mean_pct": kv_mean * 100,
        "kv_usage_max_pct": kv_max * 100,
        "running_mean": run_mean,
        "waiting_mean": wait_mean,
        "prefix_hit_rate_pct": hits / queries * 100 if queries and queries > 0 else math.nan,
        "prefix_hits_tokens": hits,
        "prefix_queries_tokens": queries,
        **tiers,
        "cpu_hit_share_pct": tiers["cpu_hit_tokens"] / all_hits * 100 if all_hits > 0 else math.nan,
        "remote_hit_share_pct": tiers["remote_hit_tokens"] / all_hits * 100
        if all_hits > 0
        else math.nan,
        **offload_bytes(cell, window),
        "process_rss_mean_gb": rss_mean / 1e9,
        "process_rss_max_gb": rss_max / 1e9,
        "gpu_utilization_pct": gpu_utilization_pct(cell, window),
        "engine_step_lag_p99_ms": step_lag_p99_s(cell, window) * 1000,
    }
    return row


def server_timeseries(cell: CellData, metric: str, combine: str = "mean") -> pd.DataFrame:
    """(t_s, value) over the whole cell, t_s from the measure window start; sources combined per scrape second."""
    rows = series(cell.server, metric)
    if rows.empty:
        return pd.DataFrame(columns=["t_s", "value"])
    window = measure_window_s(cell)
    origin = window[0] if window else float(pd.to_numeric(rows["ts_s"]).min())
    t = (pd.to_numeric(rows["ts_s"], errors="coerce") - origin).round(0)
    values = pd.to_numeric(rows["value"], errors="coerce")
    grouped = values.groupby(t)
    combined = grouped.sum() if combine == "sum" else grouped.mean()
    return pd.DataFrame({"t_s": combined.index.to_numpy(), "value": combined.to_numpy()})
