"""The discrete-event core: a virtual clock and a heap of timed actions.

Contract:
- `now_s` only moves forward, to the time of the action being run; actions due at the same time run
  in the order they were scheduled (a sequence number breaks ties), so a run is deterministic.
- An action is a plain callable; it may schedule more actions (never in the past: a time before
  `now_s` is run at `now_s`).
- `run(until)` runs actions until `until()` is true, the heap is empty, or the virtual time would
  pass `limit_s`; it reports which of the three ended it. Cancelling is the caller's business (an
  action checks its own state when it runs), which keeps the heap a plain heap.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable

Action = Callable[[], None]


class SimulationStalled(RuntimeError):
    """The cell cannot make progress; the message says why (raised from any action or the level)."""


class RunEnd(str, enum.Enum):
    DONE = "done"  # the caller's condition became true
    IDLE = "idle"  # nothing left to run
    LIMIT = "limit"  # the next action is past the time limit


class EventLoop:
    def __init__(self, start_s: float = 0.0) -> None:
        self.now_s = start_s
        self._heap: list[tuple[float, int, Action]] = []
        self._sequence = itertools.count()
        self.actions_run = 0

    def clock(self) -> float:
        """The virtual time, as a zero-argument clock for components that take one."""
        return self.now_s

    def at(self, time_s: float, action: Action) -> None:
        heapq.heappush(self._heap, (max(time_s, self.now_s), next(self._sequence), action))

    def after(self, delay_s: float, action: Action) -> None:
        self.at(self.now_s + delay_s, action)

    def every(self, interval_s: float, action: Action, active: Callable[[], bool]) -> None:
        """Run `action` now and every `interval_s` (absolute ticks) while `active()` holds."""
        start_s = self.now_s
        ticks = itertools.count(1)

        def tick() -> None:
            if not active():
                return
            action()
            self.at(start_s + next(ticks) * interval_s, tick)

        self.at(start_s, tick)

    @property
    def pending(self) -> int:
        return len(self._heap)

    def run(self, until: Callable[[], bool], limit_s: float = float("inf")) -> RunEnd:
        heap = self._heap
        pop = heapq.heappop
        while heap:
            if until():
                return RunEnd.DONE
            if heap[0][0] > limit_s:
                return RunEnd.LIMIT
            time_s, _, action = pop(heap)
            self.now_s = time_s
            action()
            self.actions_run += 1
        return RunEnd.DONE if until() else RunEnd.IDLE
