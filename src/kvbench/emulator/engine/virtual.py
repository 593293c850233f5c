"""Virtual-time driver: runs an engine without sleeping. The clock is a number advanced by each
step's duration; requests arrive at given virtual times. Used by tests and benchmarks.

Contract: a request whose `arrival_s` <= now is added before the step that starts at `now`; outputs
of a step are stamped with the step's end (`now + duration_s`); when the engine is idle the clock
jumps to the next arrival.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kvbench.emulator.engine.interface import (
    Engine,
    EngineRequest,
    KVEvent,
    RequestOutput,
    StepResult,
)


@dataclass(slots=True)
class TimedOutput:
    time_s: float
    output: RequestOutput


@dataclass(slots=True)
class VirtualRun:
    """What a run produced: every output with its delivery time, KV events, and step count."""

    outputs: list[TimedOutput] = field(default_factory=list)
    kv_events: list[KVEvent] = field(default_factory=list)
    num_steps: int = 0
    end_s: float = 0.0


class VirtualDriver:
    def __init__(
        self,
        engine: Engine,
        start_s: float = 0.0,
        on_step: Callable[[float, StepResult], None] | None = None,
    ) -> None:
        self.engine = engine
        self.now_s = start_s
        self.on_step = on_step
        self._arrivals: list[tuple[float, int, EngineRequest]] = []
        self._seq = 0

    def submit(self, request: EngineRequest) -> None:
        heapq.heappush(self._arrivals, (request.arrival_s, self._seq, request))
        self._seq += 1

    def submit_all(self, requests: Iterable[EngineRequest]) -> None:
        for request in requests:
            self.submit(request)

    def _admit_due(self) -> None:
        while self._arrivals and self._arrivals[0][0] <= self.now_s:
            self.engine.add_request(heapq.heappop(self._arrivals)[2])

    def step(self, run: VirtualRun) -> StepResult:
        self._admit_due()
        start_s = self.now_s
        result = self.engine.step(start_s)
        self.now_s = start_s + result.duration_s
        for output in result.outputs:
            run.outputs.append(TimedOutput(self.now_s, output))
        run.kv_events.extend(result.kv_events)
        run.num_steps += 1
        if self.on_step is not None:
            self.on_step(start_s, result)
        return result

    def run(self, max_steps: int = 10_000_000, until_s: float = float("inf")) -> VirtualRun:
        """Step until no request is left (or a bound is hit); jump over idle gaps."""
        run = VirtualRun()
        while run.num_steps < max_steps and self.now_s < until_s:
            self._admit_due()
            if not self.engine.has_unfinished_requests():
                if not self._arrivals:
                    break
                self.now_s = max(self.now_s, self._arrivals[0][0])
                continue
            self.step(run)
        run.end_s = self.now_s
        return run
