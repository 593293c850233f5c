"""Per-cell client metrics: complete_metrics.csv's rows, a view of each cell's CellSummary.

Every number here comes from `kvbench.results.summary` (definitions and the window rule are in
CellSummary's and measure_window's docstrings); this module only lays them out as table columns
(NaN where the summary has None) and slices the window for the single-repeat bootstrap.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kvbench.analysis.load import CellData, RunData
from kvbench.results.summary import LATENCIES, PERCENTILES, tokens_in_window

TPOT_DEFINITION = "TPOT = (E2E - TTFT) / (output_tokens - 1) (vLLM / inference-perf definition, excludes the first token)"


def percentile(values: np.ndarray, q: float) -> float:
    if len(values) == 0:
        return math.nan
    return float(np.percentile(values, q))


def ok_requests(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[frame["status"] == "ok"]


def measure_window_s(cell: CellData) -> tuple[float, float] | None:
    """(start_s, end_s) of the cell's measure window (results.summary.measure_window), or None."""
    window = cell.window
    return (window.start_s, window.end_s) if window is not None else None


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def cell_metrics(cell: CellData) -> dict:
    """One row of complete_metrics.csv."""
    info, summary = cell.info, cell.summary
    row: dict = {
        "cell_id": info.cell_id,
        "model": info.model,
        "scenario": info.scenario,
        "base_scenario": cell.base_scenario,
        "level": info.level,
        "repeat": info.repeat,
        "status": info.status.value,
        "requests_ok": summary.requests_ok,
        "requests_failed": summary.requests_failed,
        "window_s": _nan(summary.measure_window_s),
        "request_rate_rps": _nan(summary.request_rate_rps),
        "output_tok_s": _nan(summary.output_tokens_per_s),
        "input_tok_s": _nan(summary.prompt_tokens_per_s),
    }
    for name in LATENCIES:
        row[f"{name}_mean_ms"] = _nan(summary.latency_ms(name, "mean"))
        for q in PERCENTILES:
            row[f"{name}_p{q}_ms"] = _nan(summary.latency_ms(name, f"p{q}"))
    row["client_cached_fraction"] = _nan(summary.cached_prompt_fraction)
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
    """Output tok/s per equal slice of the measure window (for the single-repeat bootstrap), by the
    same rule as the cell's throughput (results.summary.tokens_in_window: tokens by arrival time)."""
    window = cell.window
    if window is None or window.duration_s <= 0:
        return np.array([], dtype=float)
    counts = tokens_in_window(cell.records, window, n_slices)
    if not counts.any():
        return np.array([], dtype=float)
    return counts / (window.duration_s / n_slices)
