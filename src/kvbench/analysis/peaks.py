"""Peak output throughput per (model, scenario) and deltas against the baseline scenario.

The peak level of a scenario is the load level with the highest mean output throughput over its
successful repeats. A delta compares two peaks (each at its own peak level, as the seed report does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kvbench.analysis.load import CellData, RunData
from kvbench.analysis.metrics import slice_throughputs_tok_s
from kvbench.analysis.stats import NO_DELTA, Delta, Interval, paired_delta, sliced_delta, t_interval

SUMMARY_METRICS = (
    "output_tok_s",
    "request_rate_rps",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "e2e_p50_ms",
)


@dataclass
class Peak:
    model: str
    scenario: str
    base_scenario: str
    level: float
    throughput: Interval  # output tok/s over repeats at the peak level
    cells: list[CellData]  # ok cells at the peak level
    per_repeat_tok_s: dict[int, float]
    delta: Delta = field(default=NO_DELTA)  # vs the run's baseline scenario (same model)

    @property
    def model_short(self) -> str:
        return self.model.split("/")[-1]


def ok_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    if metrics.empty:
        return metrics
    return metrics[
        (metrics["status"] == "ok") & metrics["output_tok_s"].notna() & (metrics["requests_ok"] > 0)
    ]


def level_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % t-interval over repeats of each summary metric per (model, scenario, level)."""
    rows = []
    if metrics.empty:
        return pd.DataFrame()
    for (model, scenario, level), group in ok_metrics(metrics).groupby(
        ["model", "scenario", "level"], sort=True
    ):
        row = {"model": model, "scenario": scenario, "level": level, "repeats": len(group)}
        for name in SUMMARY_METRICS:
            interval = t_interval(group[name].tolist())
            row[f"{name}_mean"] = interval.mean
            row[f"{name}_ci_low"] = interval.low
            row[f"{name}_ci_high"] = interval.high
        rows.append(row)
    return pd.DataFrame(rows)


def find_peaks(run: RunData, metrics: pd.DataFrame, rng: np.random.Generator) -> list[Peak]:
    summary = level_summary(metrics)
    if summary.empty:
        return []
    cells_by_id = {c.cell_id: c for c in run.cells}
    ok = ok_metrics(metrics)
    peaks: list[Peak] = []
    for (model, scenario), group in summary.groupby(["model", "scenario"], sort=False):
        best = group.loc[group["output_tok_s_mean"].idxmax()]
        at_level = ok[
            (ok["model"] == model) & (ok["scenario"] == scenario) & (ok["level"] == best["level"])
        ]
        cells = [cells_by_id[cid] for cid in at_level["cell_id"]]
        peaks.append(
            Peak(
                model=model,
                scenario=scenario,
                base_scenario=cells[0].base_scenario,
                level=float(best["level"]),
                throughput=t_interval(at_level["output_tok_s"].tolist()),
                cells=cells,
                per_repeat_tok_s=dict(
                    zip(at_level["repeat"].astype(int), at_level["output_tok_s"].astype(float))
                ),
            )
        )
    _attach_baseline_deltas(peaks, run.baseline, rng)
    order = run.scenarios()
    peaks.sort(
        key=lambda p: (p.model, order.index(p.scenario) if p.scenario in order else len(order))
    )
    return peaks


def _attach_baseline_deltas(peaks: list[Peak], baseline: str, rng: np.random.Generator) -> None:
    by_model = {p.model: p for p in peaks if p.scenario == baseline}
    for peak in peaks:
        base = by_model.get(peak.model)
        if base is None or peak is base:
            continue
        peak.delta = compare_peaks(base, peak, rng)


def compare_peaks(base: Peak, treat: Peak, rng: np.random.Generator) -> Delta:
    """Throughput of `treat` relative to `base`: paired by repeat where >= 2 repeats align, else sliced."""
    common = set(base.per_repeat_tok_s) & set(treat.per_repeat_tok_s)
    if len(common) >= 2:
        return paired_delta(base.per_repeat_tok_s, treat.per_repeat_tok_s, rng)
    if not base.cells or not treat.cells:
        return NO_DELTA
    base_cell = _pick_cell(base, common)
    treat_cell = _pick_cell(treat, common)
    return sliced_delta(
        slice_throughputs_tok_s(base_cell), slice_throughputs_tok_s(treat_cell), rng
    )


def _pick_cell(peak: Peak, common: set[int]) -> CellData:
    for cell in peak.cells:
        if cell.info.repeat in common:
            return cell
    return peak.cells[0]


def peak_table(peaks: list[Peak], baseline: str) -> pd.DataFrame:
    rows = []
    for p in peaks:
        rows.append(
            {
                "model": p.model,
                "scenario": p.scenario,
                "peak_level": p.level,
                "repeats": p.throughput.n,
                "peak_output_tok_s": p.throughput.mean,
                "ci_low": p.throughput.low,
                "ci_high": p.throughput.high,
                "baseline": baseline,
                "delta_pct": p.delta.delta_pct if p.scenario != baseline else 0.0,
                "delta_ci_low_pct": p.delta.low_pct,
                "delta_ci_high_pct": p.delta.high_pct,
                "verdict": "baseline" if p.scenario == baseline else p.delta.verdict,
                "evidence": "" if p.scenario == baseline else p.delta.evidence,
                "delta_method": "" if p.scenario == baseline else p.delta.method,
            }
        )
    return pd.DataFrame(rows)


def peak_of(peaks: list[Peak], model: str, scenario: str) -> Peak | None:
    for p in peaks:
        if p.model == model and p.scenario == scenario:
            return p
    return None


def fmt_tok_s(interval: Interval) -> str:
    if math.isnan(interval.mean):
        return "n/a"
    if math.isnan(interval.low):
        return f"{interval.mean:.1f}"
    return f"{interval.mean:.1f} [{interval.low:.1f}, {interval.high:.1f}]"
