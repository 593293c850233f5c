"""Latency deltas against the baseline scenario, with intervals.

Two comparisons per (model, scenario), each statistic in `LATENCY_STATS`:
- at a common load level: the same level for every scenario of the model (`common_level`: the
  highest level at which all of them have a successful cell). This is the fair latency comparison:
  latency grows with load, so comparing each scenario at its own peak mixes load and stack.
- at each scenario's peak level against the baseline at its peak (what the throughput table does).

Method (same rule as throughput): paired bootstrap over repeats when at least two repeat indices
align (`paired_delta` on the per-repeat statistic); otherwise one cell per side and a cluster
bootstrap that resamples conversations (`cluster_delta`). Latency is lower-is-better: the verdict
is 'lower' / 'higher' / 'no significant difference' (interval contains 0) / 'unknown', and a significant
delta on single-run evidence (or downgraded by a failed A/A check) reads 'indicative lower' /
'indicative higher' (stats.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kvbench.analysis.load import CellData, RunData, measure_requests
from kvbench.analysis.metrics import ok_requests
from kvbench.analysis.peaks import Peak
from kvbench.analysis.stats import (
    NO_DELTA,
    Delta,
    cluster_delta,
    lower_is_better_verdict,
    paired_delta,
)


@dataclass(frozen=True)
class LatencyStat:
    key: str  # column stem in latency_deltas.csv
    label: str
    column: str  # per-request column of `request_latencies`
    statistic: Callable[[np.ndarray], float]


LATENCY_STATS = (
    LatencyStat("ttft_mean", "TTFT mean", "ttft_ms", np.mean),
    LatencyStat("ttft_p50", "TTFT p50", "ttft_ms", np.median),
    LatencyStat("tpot_p50", "TPOT p50", "tpot_ms", np.median),
    LatencyStat("e2e_p50", "E2E p50", "e2e_ms", np.median),
)
STAT_BY_KEY = {s.key: s for s in LATENCY_STATS}


@dataclass(frozen=True)
class LatencyComparison:
    model: str
    scenario: str
    basis: str  # "common" (same level for all scenarios) | "peak" (each at its own peak)
    level: float  # the scenario's level
    base_level: float  # the baseline's level (== level for "common")
    stat: str  # LatencyStat.key
    value_ms: float  # the statistic, mean over repeats at `level`
    base_value_ms: float
    delta: Delta
    repeats: int

    @property
    def verdict(self) -> str:
        return lower_is_better_verdict(self.delta)

    @property
    def model_short(self) -> str:
        return self.model.split("/")[-1]


def conversation_cluster(conversation_id: pd.Series) -> pd.Series:
    """The cluster a request belongs to: its conversation, all passes of a recycled one together
    (`c12~c2` -> `c12`: the passes send identical token ids, so their cache outcomes are linked)."""
    return conversation_id.astype(str).str.replace(r"~c\d+$", "", regex=True)


def request_latencies(cell: CellData) -> pd.DataFrame:
    """Successful measure-phase requests: cluster, ttft_ms, tpot_ms (recorded, else computed), e2e_ms."""
    ok = ok_requests(measure_requests(cell))
    if ok.empty:
        return pd.DataFrame(columns=["cluster", "ttft_ms", "tpot_ms", "e2e_ms"])
    ttft = pd.to_numeric(ok["ttft_ms"], errors="coerce")
    e2e = pd.to_numeric(ok["e2e_ms"], errors="coerce")
    n_out = pd.to_numeric(ok["output_tokens"], errors="coerce")
    computed = ((e2e - ttft) / (n_out - 1)).where(n_out >= 2)
    tpot = pd.to_numeric(ok["tpot_ms"], errors="coerce").fillna(computed)
    return pd.DataFrame(
        {
            "cluster": conversation_cluster(ok["conversation_id"]).to_numpy(),
            "ttft_ms": ttft.to_numpy(dtype=float),
            "tpot_ms": tpot.to_numpy(dtype=float),
            "e2e_ms": e2e.to_numpy(dtype=float),
        }
    )


def _cell_stat(frame: pd.DataFrame, stat: LatencyStat) -> float:
    values = frame[stat.column].dropna().to_numpy(dtype=float)
    return float(stat.statistic(values)) if len(values) else math.nan


def ok_cells_by_key(run: RunData) -> dict[tuple[str, str, float], list[CellData]]:
    """(model, scenario, level) -> successful cells with at least one successful measured request."""
    out: dict[tuple[str, str, float], list[CellData]] = {}
    for cell in run.cells:
        if cell.ok and not ok_requests(measure_requests(cell)).empty:
            out.setdefault(
                (cell.info.model, cell.info.scenario, float(cell.info.level)), []
            ).append(cell)
    return out


def common_level(
    cells: dict[tuple[str, str, float], list[CellData]], model: str, scenarios: list[str]
) -> float | None:
    """The highest level at which every scenario of `model` has a successful cell (None if none)."""
    levels = [
        {lvl for (m, s, lvl) in cells if m == model and s == scenario} for scenario in scenarios
    ]
    levels = [lv for lv in levels if lv]
    shared = set.intersection(*levels) if levels else set()
    return max(shared) if shared else None


def compare_latency(
    base_cells: list[CellData],
    treat_cells: list[CellData],
    stat: LatencyStat,
    rng: np.random.Generator,
) -> Delta:
    base = {c.info.repeat: request_latencies(c) for c in base_cells}
    treat = {c.info.repeat: request_latencies(c) for c in treat_cells}
    common = sorted(set(base) & set(treat))
    if len(common) >= 2:
        return paired_delta(
            {r: _cell_stat(base[r], stat) for r in common},
            {r: _cell_stat(treat[r], stat) for r in common},
            rng,
        )
    if not base or not treat:
        return NO_DELTA
    b = base[common[0]] if common else base[min(base)]
    t = treat[common[0]] if common else treat[min(treat)]
    b, t = b.dropna(subset=[stat.column]), t.dropna(subset=[stat.column])
    return cluster_delta(
        b[stat.column].to_numpy(),
        b["cluster"].to_numpy(),
        t[stat.column].to_numpy(),
        t["cluster"].to_numpy(),
        rng,
        stat.statistic,
    )


def _mean_stat(cells: list[CellData], stat: LatencyStat) -> float:
    values = [_cell_stat(request_latencies(c), stat) for c in cells]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def latency_comparisons(
    run: RunData, peaks: list[Peak], rng: np.random.Generator
) -> list[LatencyComparison]:
    cells = ok_cells_by_key(run)
    baseline = run.baseline
    out: list[LatencyComparison] = []
    memo: dict = {}
    for model in run.models():
        scenarios = [s for s in run.scenarios() if any(k[0] == model and k[1] == s for k in cells)]
        if baseline not in scenarios:
            continue
        level = common_level(cells, model, scenarios)
        if level is not None:
            out += _compare_all(
                cells,
                model,
                scenarios,
                baseline,
                "common",
                {s: level for s in scenarios},
                rng,
                memo,
            )
        peak_levels = {p.scenario: p.level for p in peaks if p.model == model}
        if baseline in peak_levels:
            out += _compare_all(
                cells,
                model,
                [s for s in scenarios if s in peak_levels],
                baseline,
                "peak",
                peak_levels,
                rng,
                memo,
            )
    return out


def _compare_all(
    cells,
    model: str,
    scenarios: list[str],
    baseline: str,
    basis: str,
    levels: dict[str, float],
    rng: np.random.Generator,
    memo: dict,
) -> list[LatencyComparison]:
    """`memo` holds deltas already computed for the same (scenario, levels, stat): a peak at the common
    level gets the very same delta in both tables."""
    base_cells = cells[(model, baseline, levels[baseline])]
    out = []
    for scenario in scenarios:
        treat_cells = cells[(model, scenario, levels[scenario])]
        for stat in LATENCY_STATS:
            key = (model, scenario, levels[baseline], levels[scenario], stat.key)
            if key not in memo:
                memo[key] = (
                    NO_DELTA
                    if scenario == baseline
                    else compare_latency(base_cells, treat_cells, stat, rng)
                )
            delta = memo[key]
            out.append(
                LatencyComparison(
                    model,
                    scenario,
                    basis,
                    levels[scenario],
                    levels[baseline],
                    stat.key,
                    _mean_stat(treat_cells, stat),
                    _mean_stat(base_cells, stat),
                    delta,
                    len(treat_cells),
                )
            )
    return out


def latency_table(comparisons: list[LatencyComparison]) -> pd.DataFrame:
    """latency_deltas.csv: one row per (model, scenario, basis, statistic)."""
    return pd.DataFrame(
        [
            {
                "model": c.model,
                "scenario": c.scenario,
                "basis": c.basis,
                "level": c.level,
                "baseline_level": c.base_level,
                "statistic": c.stat,
                "value_ms": c.value_ms,
                "baseline_value_ms": c.base_value_ms,
                "repeats": c.repeats,
                "delta_pct": c.delta.delta_pct,
                "delta_ci_low_pct": c.delta.low_pct,
                "delta_ci_high_pct": c.delta.high_pct,
                "verdict": c.verdict if c.delta.method != "none" else "baseline",
                "evidence": c.delta.evidence if c.delta.method != "none" else "",
                "delta_method": c.delta.method,
            }
            for c in comparisons
        ]
    )


def select(
    comparisons: list[LatencyComparison],
    *,
    model: str | None = None,
    basis: str | None = None,
    stat: str | None = None,
    scenario: str | None = None,
) -> list[LatencyComparison]:
    return [
        c
        for c in comparisons
        if (model is None or c.model == model)
        and (basis is None or c.basis == basis)
        and (stat is None or c.stat == stat)
        and (scenario is None or c.scenario == scenario)
    ]
