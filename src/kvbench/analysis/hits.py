"""TTFT of prefix hits vs misses: why a scenario's TTFT moved (more hits, or faster hits / misses).

A request is a *hit* when the server reported cached tokens for at least `HIT_SHARE_OF_PROMPT` of its
prompt (`cached_tokens >= 0.5 * prompt_tokens`), a *miss* otherwise; requests without a reported
`cached_tokens` are counted as unknown and left out of both. With such a split TTFT is typically
bimodal (a hit skips most of the prefill), which is why the guidance rule uses the TTFT mean.

Exact decomposition of a TTFT-mean shift (s = hit share, h / m = hit / miss TTFT mean, b = baseline,
t = treatment):  mean_t - mean_b = (s_t - s_b)(h_b - m_b) + s_t (h_t - h_b) + (1 - s_t)(m_t - m_b),
i.e. a *mix* part (more or fewer hits at the baseline's hit and miss speeds), a *hit speed* part and
a *miss speed* part. Defined only when both sides have hits and misses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kvbench.analysis.latency import LatencyComparison, ok_cells_by_key, select
from kvbench.analysis.load import CellData, RunData, measure_requests
from kvbench.analysis.metrics import ok_requests

HIT_SHARE_OF_PROMPT = 0.5


@dataclass(frozen=True)
class HitSplit:
    model: str
    scenario: str
    level: float
    cells: int  # repeats pooled
    hits: int
    misses: int
    unknown: int  # no cached_tokens reported
    hit_ttft_mean_ms: float
    miss_ttft_mean_ms: float

    @property
    def hit_share(self) -> float:
        known = self.hits + self.misses
        return self.hits / known if known else math.nan

    @property
    def both_modes(self) -> bool:
        return self.hits > 0 and self.misses > 0


@dataclass(frozen=True)
class ShiftParts:
    total_ms: float
    mix_ms: float  # from the change in hit share
    hit_speed_ms: float
    miss_speed_ms: float


def split_cells(cells: list[CellData], model: str, scenario: str, level: float) -> HitSplit:
    """Pool the successful measure-phase requests of `cells` and split them into hits and misses."""
    frames = [ok_requests(measure_requests(c)) for c in cells]
    frames = [f for f in frames if not f.empty]
    ok = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["ttft_ms", "cached_tokens", "prompt_tokens"])
    )
    ttft = pd.to_numeric(ok["ttft_ms"], errors="coerce")
    cached = pd.to_numeric(ok["cached_tokens"], errors="coerce")
    prompt = pd.to_numeric(ok["prompt_tokens"], errors="coerce")
    known = cached.notna() & prompt.notna() & ttft.notna()
    is_hit = known & (cached >= HIT_SHARE_OF_PROMPT * prompt)
    is_miss = known & ~is_hit
    return HitSplit(
        model,
        scenario,
        level,
        len(cells),
        int(is_hit.sum()),
        int(is_miss.sum()),
        int((~known).sum()),
        _mean(ttft[is_hit]),
        _mean(ttft[is_miss]),
    )


def _mean(values: pd.Series) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def hit_splits(run: RunData, comparisons: list[LatencyComparison]) -> list[HitSplit]:
    """Per (model, scenario) at the common load level used by the latency comparisons."""
    cells = ok_cells_by_key(run)
    keys = dict.fromkeys(
        (c.model, c.scenario, c.level) for c in select(comparisons, basis="common")
    )
    return [split_cells(cells[key], *key) for key in keys if key in cells]


def shift_parts(base: HitSplit, treat: HitSplit) -> ShiftParts | None:
    if not (base.both_modes and treat.both_modes):
        return None
    s_b, s_t = base.hit_share, treat.hit_share
    h_b, m_b, h_t, m_t = (
        base.hit_ttft_mean_ms,
        base.miss_ttft_mean_ms,
        treat.hit_ttft_mean_ms,
        treat.miss_ttft_mean_ms,
    )
    mix = (s_t - s_b) * (h_b - m_b)
    hit_speed = s_t * (h_t - h_b)
    miss_speed = (1 - s_t) * (m_t - m_b)
    return ShiftParts(mix + hit_speed + miss_speed, mix, hit_speed, miss_speed)


def shift_sentence(base: HitSplit, treat: HitSplit) -> str | None:
    """e.g. 'TTFT mean -80.1 ms vs baseline: -70.3 ms from more prefix hits (62% vs 20% of requests), ...'."""
    parts = shift_parts(base, treat)
    if parts is None:
        return _unsplit_sentence(base, treat)
    more = "more" if treat.hit_share >= base.hit_share else "fewer"
    hit_word = "faster" if parts.hit_speed_ms <= 0 else "slower"
    miss_word = "faster" if parts.miss_speed_ms <= 0 else "slower"
    return (
        f"TTFT mean {parts.total_ms:+.1f} ms vs baseline: {parts.mix_ms:+.1f} ms from {more} prefix hits "
        f"({treat.hit_share:.0%} vs {base.hit_share:.0%} of requests), {parts.hit_speed_ms:+.1f} ms from {hit_word} "
        f"hits ({treat.hit_ttft_mean_ms:.1f} vs {base.hit_ttft_mean_ms:.1f} ms), {parts.miss_speed_ms:+.1f} ms from "
        f"{miss_word} misses ({treat.miss_ttft_mean_ms:.1f} vs {base.miss_ttft_mean_ms:.1f} ms)"
    )


def _unsplit_sentence(base: HitSplit, treat: HitSplit) -> str | None:
    """One side has only hits or only misses: say the shares and means, and that no split is possible."""
    if math.isnan(base.hit_share) or math.isnan(treat.hit_share):
        return None

    def means(s: HitSplit) -> str:
        return f"hit {_ms(s.hit_ttft_mean_ms)}, miss {_ms(s.miss_ttft_mean_ms)} ms"

    return (
        f"prefix hits {treat.hit_share:.0%} vs {base.hit_share:.0%} of requests (TTFT mean {means(treat)} vs "
        f"{means(base)}); one side has no {'misses' if not (base.misses and treat.misses) else 'hits'}, so the "
        "shift is not split into parts"
    )


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def split_table(splits: list[HitSplit]) -> pd.DataFrame:
    """ttft_hits_misses.csv."""
    return pd.DataFrame(
        [
            {
                "model": s.model,
                "scenario": s.scenario,
                "level": s.level,
                "repeats": s.cells,
                "hits": s.hits,
                "misses": s.misses,
                "unknown": s.unknown,
                "hit_share_pct": s.hit_share * 100,
                "hit_ttft_mean_ms": s.hit_ttft_mean_ms,
                "miss_ttft_mean_ms": s.miss_ttft_mean_ms,
            }
            for s in splits
        ]
    )
