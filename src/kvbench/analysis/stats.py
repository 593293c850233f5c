"""Confidence intervals and deltas against the baseline.

- `t_interval`: mean and two-sided t-interval over repeats (one value per repeat).
- `paired_delta`: relative delta of a treatment against the baseline when both have the same repeat
  indices (same seed per repeat): a bootstrap over repeat pairs (percentile interval). With fewer than
  `MIN_PAIRS_FOR_BOOTSTRAP_ONLY` pairs the percentile bootstrap under-covers, so the interval is
  widened to also contain the paired t-interval on the per-pair deltas (stated in `method`).
- `sliced_delta`: a single repeat per side: each side's requests, grouped by completion time into
  slices of the measure window, are resampled within the cell (slices, not single requests, because
  with fixed output lengths a request resample cannot move a throughput).
- `request_delta`: resample requests within each cell for a per-request statistic (e.g. TTFT mean).
- `cluster_delta`: a per-request latency statistic from one cell per side, resampling whole
  conversations (cluster bootstrap): the turns of one conversation share its cache history, so they
  are not independent draws and a request-level resample would give too narrow an interval.
An interval that contains zero means "no significant difference", never a gain or a loss.
The RNG is always passed in (deterministic reports).

Evidence and verdict words (the same strings in the CSVs and REPORT.md):
- `evidence`: EVIDENCE_PAIRED ("paired-repeats", >= 2 aligned repeats per side) or EVIDENCE_SINGLE
  ("single-run": one cell per side; the interval covers within-cell sampling only, not run-to-run
  variance, which one repeat cannot measure).
- A significant delta is 'gain' / 'loss' (or 'lower' / 'higher' for latency) only on paired-repeats
  evidence that no failed A/A twin check has downgraded; otherwise it is 'indicative gain' etc.
  (INDICATIVE_PREFIX), which no guidance rule treats as a recommendation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
N_BOOT = 2000
MIN_PAIRS_FOR_BOOTSTRAP_ONLY = 10
EVIDENCE_PAIRED = "paired-repeats"
EVIDENCE_SINGLE = "single-run"
INDICATIVE_PREFIX = "indicative "
INDICATIVE_MEANING = "significant within this run (1 repeat; run-to-run variance not measured)"
DOWNGRADED_MEANING = (
    "significant by its interval, downgraded because equivalent configurations differed (A/A check)"
)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Delta:
    """Relative difference treatment vs baseline, in percent, with its interval."""

    delta_pct: float
    low_pct: float
    high_pct: float
    method: str
    n: int  # repeat pairs, or slices / requests per side
    evidence: str = EVIDENCE_SINGLE  # EVIDENCE_PAIRED | EVIDENCE_SINGLE
    downgraded: bool = (
        False  # a failed A/A twin check in this model: significance is indicative only
    )

    @property
    def indicative(self) -> bool:
        """Significant, but not firm evidence: single run, or downgraded by a failed A/A check."""
        return self.significant and (self.evidence != EVIDENCE_PAIRED or self.downgraded)

    @property
    def known(self) -> bool:
        return not (math.isnan(self.low_pct) or math.isnan(self.high_pct))

    @property
    def significant(self) -> bool:
        return self.known and (self.low_pct > 0 or self.high_pct < 0)

    @property
    def verdict(self) -> str:
        """'gain' | 'loss' | 'indicative gain' | 'indicative loss' | 'no significant difference' | 'unknown'
        (higher-is-better metric)."""
        if not self.known:
            return "unknown"
        if not self.significant:
            return "no significant difference"
        return self._qualified("gain" if self.delta_pct > 0 else "loss")

    def _qualified(self, word: str) -> str:
        return INDICATIVE_PREFIX + word if self.indicative else word

    def meaning(self) -> str:
        """What an indicative verdict rests on ('' for the others), for prose next to the verdict."""
        if not self.indicative:
            return ""
        return DOWNGRADED_MEANING if self.evidence == EVIDENCE_PAIRED else INDICATIVE_MEANING

    def indicative_reason(self) -> str:
        """Short form of `meaning` for guidance sentences that already say 'in this run'."""
        if not self.indicative:
            return ""
        return "A/A check failed" if self.evidence == EVIDENCE_PAIRED else "1 repeat per side"

    def text(self) -> str:
        if math.isnan(self.delta_pct):
            return "n/a"
        if not self.known:
            return f"{self.delta_pct:+.1f}% (no interval)"
        return f"{self.delta_pct:+.1f}% [{self.low_pct:+.1f}, {self.high_pct:+.1f}]"


NO_DELTA = Delta(math.nan, math.nan, math.nan, "none", 0, evidence="")


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(data)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1) * data.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def _pct(ratio: Any) -> Any:
    """(ratio - 1) in percent, elementwise for an array of bootstrap ratios."""
    return (ratio - 1.0) * 100.0


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    return float(np.quantile(samples, alpha)), float(np.quantile(samples, 1 - alpha))


def paired_delta(
    base: dict[int, float],
    treat: dict[int, float],
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
) -> Delta:
    """base/treat: repeat index -> value. Only repeats present on both sides are used."""
    keys = sorted(
        k for k in base if k in treat and not math.isnan(base[k]) and not math.isnan(treat[k])
    )
    if not keys:
        return NO_DELTA
    b = np.array([base[k] for k in keys], dtype=float)
    t = np.array([treat[k] for k in keys], dtype=float)
    if b.mean() <= 0:
        return NO_DELTA
    point = float(_pct(t.mean() / b.mean()))
    n = len(keys)
    if n < 2:
        return Delta(point, math.nan, math.nan, "single pair: no interval", n, EVIDENCE_SINGLE)
    picks = rng.integers(0, n, size=(n_boot, n))
    boot = _pct(t[picks].mean(axis=1) / b[picks].mean(axis=1))
    low, high = _percentile_interval(boot, confidence)
    method = f"paired bootstrap over {n} repeat pairs ({n_boot} resamples)"
    if n < MIN_PAIRS_FOR_BOOTSTRAP_ONLY:
        per_pair = _pct(t / b)
        tint = t_interval(per_pair, confidence)
        low, high = min(low, tint.low), max(high, tint.high)
        method += (
            f", widened to the paired t-interval because {n} < {MIN_PAIRS_FOR_BOOTSTRAP_ONLY} pairs"
        )
    return Delta(point, low, high, method, n, EVIDENCE_PAIRED)


def sliced_delta(
    base_slices: np.ndarray,
    treat_slices: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
) -> Delta:
    """Throughput delta from one cell per side: resample each side's window slices independently."""
    return _independent_bootstrap(
        base_slices,
        treat_slices,
        rng,
        np.mean,
        n_boot,
        confidence,
        f"bootstrap within single cells: requests grouped into {len(base_slices)} time slices of the window, resampled",
    )


def request_delta(
    base_values: np.ndarray,
    treat_values: np.ndarray,
    rng: np.random.Generator,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
) -> Delta:
    return _independent_bootstrap(
        base_values,
        treat_values,
        rng,
        statistic,
        n_boot,
        confidence,
        "bootstrap resampling requests within each cell",
    )


def _independent_bootstrap(
    base: np.ndarray,
    treat: np.ndarray,
    rng: np.random.Generator,
    statistic: Callable[[np.ndarray], float],
    n_boot: int,
    confidence: float,
    method: str,
) -> Delta:
    base = np.asarray(base, dtype=float)
    treat = np.asarray(treat, dtype=float)
    if len(base) == 0 or len(treat) == 0 or statistic(base) <= 0:
        return NO_DELTA
    point = float(_pct(statistic(treat) / statistic(base)))
    if len(base) < 2 or len(treat) < 2:
        return Delta(
            point,
            math.nan,
            math.nan,
            method + " (too few samples: no interval)",
            min(len(base), len(treat)),
        )
    base_boot = _boot_stat(base, rng, statistic, n_boot)
    treat_boot = _boot_stat(treat, rng, statistic, n_boot)
    valid = base_boot > 0
    boot = _pct(treat_boot[valid] / base_boot[valid])
    low, high = _percentile_interval(boot, confidence)
    return Delta(point, low, high, f"{method} ({n_boot} resamples)", min(len(base), len(treat)))


def _boot_stat(
    values: np.ndarray, rng: np.random.Generator, statistic: Callable, n_boot: int
) -> np.ndarray:
    picks = rng.integers(0, len(values), size=(n_boot, len(values)))
    if statistic is np.mean:
        return values[picks].mean(axis=1)
    return np.array([statistic(values[row]) for row in picks], dtype=float)


def cluster_delta(
    base_values: np.ndarray,
    base_clusters: np.ndarray,
    treat_values: np.ndarray,
    treat_clusters: np.ndarray,
    rng: np.random.Generator,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
) -> Delta:
    """Relative delta of `statistic` (treat vs base); each side resamples its clusters with replacement.

    values[i] belongs to cluster clusters[i] (a conversation id). n = clusters on the smaller side.
    """
    base = _Clustered(np.asarray(base_values, dtype=float), np.asarray(base_clusters))
    treat = _Clustered(np.asarray(treat_values, dtype=float), np.asarray(treat_clusters))
    method = "cluster bootstrap within single cells: conversations resampled"
    n = min(base.n_clusters, treat.n_clusters)
    if len(base.values) == 0 or len(treat.values) == 0 or statistic(base.values) <= 0:
        return NO_DELTA
    point = float(_pct(statistic(treat.values) / statistic(base.values)))
    if n < 2:
        return Delta(
            point, math.nan, math.nan, method + " (fewer than 2 conversations: no interval)", n
        )
    base_boot, treat_boot = base.boot(rng, statistic, n_boot), treat.boot(rng, statistic, n_boot)
    valid = base_boot > 0
    low, high = _percentile_interval(_pct(treat_boot[valid] / base_boot[valid]), confidence)
    return Delta(point, low, high, f"{method} ({n_boot} resamples)", n)


class _Clustered:
    """Values grouped by cluster, for resampling whole clusters."""

    def __init__(self, values: np.ndarray, clusters: np.ndarray) -> None:
        keep = ~np.isnan(values)
        self.values = values[keep]
        _, codes = np.unique(clusters[keep].astype(str), return_inverse=True)
        self.members = (
            [np.flatnonzero(codes == k) for k in range(codes.max() + 1)] if len(codes) else []
        )
        self.n_clusters = len(self.members)
        self._sums = np.array([self.values[m].sum() for m in self.members])
        self._counts = np.array([len(m) for m in self.members], dtype=float)

    def boot(self, rng: np.random.Generator, statistic: Callable, n_boot: int) -> np.ndarray:
        picks = rng.integers(0, self.n_clusters, size=(n_boot, self.n_clusters))
        if statistic is np.mean:  # exact and vectorised: pooled mean of the picked clusters
            return self._sums[picks].sum(axis=1) / self._counts[picks].sum(axis=1)
        return np.array(
            [
                statistic(self.values[np.concatenate([self.members[k] for k in row])])
                for row in picks
            ]
        )


def lower_is_better_verdict(delta: Delta) -> str:
    """For latencies: 'lower' | 'higher' | 'indicative lower' | 'indicative higher' |
    'no significant difference' | 'unknown'."""
    if not delta.known:
        return "unknown"
    if not delta.significant:
        return "no significant difference"
    return delta._qualified("lower" if delta.delta_pct < 0 else "higher")


def is_indicative(verdict: str) -> bool:
    return verdict.startswith(INDICATIVE_PREFIX)


def equivalence(delta: Delta, margin_pct: float) -> str:
    """'equivalent' only when the whole interval lies inside +-margin; 'different' when it excludes zero."""
    if not delta.known:
        return "unknown"
    if delta.significant:
        return "different"
    if -margin_pct <= delta.low_pct and delta.high_pct <= margin_pct:
        return "equivalent"
    return "inconclusive"
