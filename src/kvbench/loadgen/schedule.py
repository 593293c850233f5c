"""Pure scheduling pieces of the load strategies, shared by the live load generator
(loadgen/strategies.py, perf_counter seconds) and the simulated client (simulate/, virtual
seconds): the arrival-slot generators and the queue of follow-up turns waiting for their ready time.
Nothing here reads a clock or does I/O; times are in whatever base the caller uses.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator

from kvbench.loadgen.history import ConversationState


def constant_arrivals(start_s: float, rate_per_s: float) -> Iterator[float]:
    for index in itertools.count():
        yield start_s + index / rate_per_s


def poisson_arrivals(start_s: float, rate_per_s: float, seed: int) -> Iterator[float]:
    """First slot at start, then exponential gaps with mean 1/rate (seeded, reproducible)."""
    rng = random.Random(seed)
    slot = start_s
    while True:
        yield slot
        slot += rng.expovariate(rate_per_s)


def stagger_offsets_s(streams: int, stagger_s: float, seed: int) -> list[float]:
    """Start offsets of `streams` streams: 0 for the first, seeded uniform [0, stagger_s) for the rest
    (sorted, so stream index order is start order). All 0 when stagger_s <= 0 or one stream."""
    if streams <= 1 or stagger_s <= 0:
        return [0.0] * max(streams, 0)
    rng = random.Random(f"stagger:{seed}")
    return [0.0] + sorted(rng.uniform(0.0, stagger_s) for _ in range(streams - 1))


class ReadyTurns:
    """Follow-up turns waiting for their ready time, oldest first; `running` = turns in flight
    (kept here, not read off the task set: a task leaves that set only after its done callback)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, ConversationState]] = []
        self._sequence = itertools.count()
        self.running = 0

    def push(self, ready_s: float, state: ConversationState) -> None:
        heapq.heappush(self._heap, (ready_s, next(self._sequence), state))

    def pop_ready(self, now_s: float) -> ConversationState | None:
        if self._heap and self._heap[0][0] <= now_s:
            return heapq.heappop(self._heap)[2]
        return None

    def next_ready_s(self) -> float | None:
        return self._heap[0][0] if self._heap else None
