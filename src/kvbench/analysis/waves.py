"""Validity check "load not synchronized": were a cell's requests sent and finished in waves?

N identical streams started together are batched together, finish together and send their next
requests together: the cell then runs in lock-step waves, its completions arrive in bursts, and a
throughput counted from completions jumps by whole waves (the quantized 614.4 [614.4, 614.4] of a
wave-locked run). The check is scale-free:

- a *burst* is a maximal run of sorted event times whose consecutive gaps are all below
  `BURST_GAP_SHARE` x the mean gap of the cell (events in a wave are much closer together than
  events spread over the window);
- the *wave share* of a series is the share of its events that sit in bursts of at least
  `min_burst` events, with min_burst = max(3, half the level's streams);
- FLAG when the wave share of both the send times and the end times exceeds `MAX_WAVE_SHARE`.

For a Poisson series a gap is below 0.1 x the mean with probability 1 - e^-0.1 (about 10 %), so
bursts of 3 or more cover about 1 % of events; lock-step waves put nearly every event in one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kvbench.analysis.load import CellData, measure_requests
from kvbench.analysis.metrics import ok_requests

CHECK_NAME = "load not synchronized"
BURST_GAP_SHARE = 0.1
MAX_WAVE_SHARE = 0.5
MIN_EVENTS = 12  # fewer measured requests: too few to tell waves from chance


def wave_share(times_s: np.ndarray, min_burst: int) -> float:
    """Share of events in bursts of >= min_burst events (see module doc); nan for < 2 events."""
    times = np.sort(times_s[~np.isnan(times_s)])
    if len(times) < 2:
        return float("nan")
    gaps = np.diff(times)
    mean_gap = float(gaps.mean())
    if mean_gap <= 0:
        return 1.0  # every event at the same instant
    close = gaps < BURST_GAP_SHARE * mean_gap
    in_bursts, run = 0, 1  # `run` = events in the current burst
    for is_close in close:
        if is_close:
            run += 1
            continue
        in_bursts += run if run >= min_burst else 0
        run = 1
    in_bursts += run if run >= min_burst else 0
    return in_bursts / len(times)


def min_burst_for(level: float, strategy: str) -> int:
    """Bursts that count as waves: at least half of the streams (concurrent), never below 3."""
    streams = level if strategy == "concurrent" else 0
    return max(3, int(streams // 2))


@dataclass(frozen=True)
class WaveEvidence:
    requests: int  # successful measured requests
    min_burst: int
    sent_share: float  # wave share of send times
    ended_share: float  # wave share of end times

    @property
    def synchronized(self) -> bool:
        return self.sent_share > MAX_WAVE_SHARE and self.ended_share > MAX_WAVE_SHARE

    def text(self) -> str:
        return (
            f"{self.sent_share:.0%} of {self.requests} requests sent and {self.ended_share:.0%} "
            f"finished in bursts of >= {self.min_burst} (gaps < {BURST_GAP_SHARE:g} x the mean "
            f"gap); waves when both exceed {MAX_WAVE_SHARE:.0%}"
        )


def wave_evidence(cell: CellData) -> WaveEvidence | None:
    """None when the cell has fewer than MIN_EVENTS successful measured requests."""
    ok = ok_requests(measure_requests(cell))
    if len(ok) < MIN_EVENTS:
        return None
    min_burst = min_burst_for(cell.info.level, cell.info.strategy)
    sent = pd.to_numeric(ok["sent_s"], errors="coerce").to_numpy(float)
    ended = pd.to_numeric(ok["end_s"], errors="coerce").to_numpy(float)
    return WaveEvidence(
        len(ok), min_burst, wave_share(sent, min_burst), wave_share(ended, min_burst)
    )
