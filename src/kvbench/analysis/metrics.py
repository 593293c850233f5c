"""Per-cell client metrics from the per-request records (measure phase only).

Definitions (DESIGN.md, records.py):
- TTFT = first token received - request sent; E2E = last token - request sent.
- TPOT = (e2e - ttft) / (output_tokens - 1), vLLM's and inference-perf's definition; requests with
  fewer than 2 output tokens have no TPOT. The recorded `tpot_ms` is used where present.
- ITL = the gaps between token arrivals, pooled over all requests of the cell.
- Throughput = tokens (or requests) of successful measure-phase requests / measure window seconds.
  The window is cell.json's measure_start_s..measure_end_s; when absent, first send to last end.
- Percentiles: numpy's linear interpolation between order statistics (numpy.percentile default).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kvbench.analysis.load import CellData, RunData, measure_requests

PERCENTILES = (50, 90, 99)
LATENCIES = ("ttft", "tpot", "itl", "e2e")
TPOT_DEFINITION = "TPOT = (E2E - TTFT) / (output_tokens - 1) (vLLM / inference-perf definition, excludes the first token)"


def percentile(values: np.ndarray, q: float) -> float:
    if len(values) == 0:
        return math.nan
    return float(np.percentile(values, q))


def ok_requests(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[frame["status"] == "ok"]


def measure_window_s(cell: CellData, measured: pd.DataFrame) -> tuple[float, float] | None:
    """(start_s, end_s) of the measure window, or None when nothing says how long it was."""
    info = cell.info
    if (
        info.measure_start_s is not None
        and info.measure_end_s is not None
        and info.measure_end_s > info.measure_start_s
    ):
        return float(info.measure_start_s), float(info.measure_end_s)
    if measured.empty:
        return None
    start = pd.to_numeric(measured["sent_s"], errors="coerce").min()
    end = pd.to_numeric(measured["end_s"], errors="coerce").max()
    if pd.isna(start) or pd.isna(end) or end <= start:
        return None
    return float(start), float(end)


def tpot_values_ms(ok: pd.DataFrame) -> np.ndarray:
    recorded = pd.to_numeric(ok["tpot_ms"], errors="coerce")
    e2e = pd.to_numeric(ok["e2e_ms"], errors="coerce")
    ttft = pd.to_numeric(ok["ttft_ms"], errors="coerce")
    n_out = pd.to_numeric(ok["output_tokens"], errors="coerce")
    computed = (e2e - ttft) / (n_out - 1)
    computed[n_out < 2] = np.nan
    values = recorded.where(recorded.notna(), computed)
    return values.dropna().to_numpy(dtype=float)


def itl_values_ms(ok: pd.DataFrame) -> np.ndarray:
    chunks = [np.asarray(v, dtype=float) for v in ok["itl_ms"] if v is not None and len(v) > 0]
    return np.concatenate(chunks) if chunks else np.array([], dtype=float)


def latency_values_ms(ok: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        "ttft": pd.to_numeric(ok["ttft_ms"], errors="coerce").dropna().to_numpy(dtype=float),
        "tpot": tpot_values_ms(ok),
        "itl": itl_values_ms(ok),
        "e2e": pd.to_numeric(ok["e2e_ms"], errors="coerce").dropna().to_numpy(dtype=float),
    }


def cell_metrics(cell: CellData) -> dict:
    """One row of complete_metrics.csv."""
    info = cell.info
    row: dict = {
        "cell_id": info.cell_id,
        "model": info.model,
        "scenario": info.scenario,
        "base_scenario": cell.base_scenario,
        "level": info.level,
        "repeat": info.repeat,
        "status": info.status.value,
    }
    measured = measure_requests(cell)
    ok = ok_requests(measured)
    row["requests_ok"] = int(len(ok))
    row["requests_failed"] = int(len(measured) - len(ok))
    window = measure_window_s(cell, measured)
    row["window_s"] = (window[1] - window[0]) if window else math.nan
    out_tokens = (
        float(pd.to_numeric(ok["output_tokens"], errors="coerce").sum()) if len(ok) else 0.0
    )
    in_tokens = float(pd.to_numeric(ok["prompt_tokens"], errors="coerce").sum()) if len(ok) else 0.0
    has_rate = window is not None and len(measured) > 0
    row["request_rate_rps"] = len(ok) / row["window_s"] if has_rate else math.nan
    row["output_tok_s"] = out_tokens / row["window_s"] if has_rate else math.nan
    row["input_tok_s"] = in_tokens / row["window_s"] if has_rate else math.nan
    for name, values in latency_values_ms(ok).items():
        row[f"{name}_mean_ms"] = float(values.mean()) if len(values) else math.nan
        for q in PERCENTILES:
            row[f"{name}_p{q}_ms"] = percentile(values, q)
    cached = (
        pd.to_numeric(ok["cached_tokens"], errors="coerce") if len(ok) else pd.Series(dtype=float)
    )
    prompt = (
        pd.to_numeric(ok["prompt_tokens"], errors="coerce") if len(ok) else pd.Series(dtype=float)
    )
    row["client_cached_fraction"] = (
        float(cached.sum() / prompt[cached.notna()].sum())
        if cached.notna().any() and prompt[cached.notna()].sum() > 0
        else math.nan
    )
    return row


def complete_metrics(run: RunData) -> pd.DataFrame:
    rows = [cell_metrics(cell) for cell in run.cells]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["model", "scenario", "level", "repeat"], kind="stable").reset_index(
        drop=True
    )


def slice_throughputs_tok_s(cell: CellData, n_slices: int = 10) -> np.ndarray:
    """Output tokens completed per equal slice of the measure window, as tok/s (for the single-repeat bootstrap)."""
    measured = measure_requests(cell)
    ok = ok_requests(measured)
    window = measure_window_s(cell, measured)
    if window is None or ok.empty:
        return np.array([], dtype=float)
    start_s, end_s = window
    width_s = (end_s - start_s) / n_slices
    ends = pd.to_numeric(ok["end_s"], errors="coerce").to_numpy(dtype=float)
    tokens = pd.to_numeric(ok["output_tokens"], errors="coerce").to_numpy(dtype=float)
    index = np.clip(np.floor((ends - start_s) / width_s), 0, n_slices - 1)
    index = np.where(np.isnan(index), 0, index).astype(int)
    per_slice = np.bincount(index, weights=tokens, minlength=n_slices)
    return per_slice / width_s
