"""Real-time driver: runs a clock-agnostic engine's steps on absolute deadlines and streams tokens.

Timeline contract (all times from the injected monotonic `clock`, in seconds):
- A busy period starts at the first step's start; step n runs at `deadline_n` and its outputs are
  delivered at `deadline_n + duration_n`, which is also `deadline_{n+1}`. Deadlines are absolute, so
  a late wake-up never shifts the emulated timeline (no drift): it only shows up as lag.
- `lag_n = actual start of step n - deadline_n` is measured every step and handed to `on_step`;
  an overloaded emulator shows growing lag instead of silently slowing down.
- The engine never reads the clock: it gets `now_s = deadline_n`.
- With no unfinished requests the driver idles (no steps, no timers) until `submit` wakes it; the
  next busy period's deadlines start from that moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from kvbench.emulator.engine.interface import (
    Engine,
    EngineRequest,
    FinishReason,
    KVEvent,
    RequestOutput,
    StepResult,
    TierHits,
)

# A step that schedules nothing (e.g. every request waits on an async KV load) still advances
# time by this much, so the driver polls instead of spinning.
IDLE_POLL_S = 0.001

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RequestStream:
    """One request's view of the engine: tokens as they are delivered, plus its timestamps.

    Tokens are handed to the consumer in batches of at least `stream_interval` tokens, except the
    first token and the final batch, which are always released at once (vLLM's rule).
    """

    def __init__(self, request: EngineRequest, stream_interval: int) -> None:
        self.request = request
        self.stream_interval = stream_interval
        self.num_prompt_tokens = len(request.prompt_token_ids)
        self.num_cached_tokens = 0
        self.hits = TierHits()
        self.num_preemptions = 0
        self.output_token_ids: list[int] = []
        self.finished = False
        self.finish_reason: FinishReason | None = None
        # emulated-time stamps (driver clock)
        self.arrival_s = request.arrival_s
        self.scheduled_s: float | None = None  # start of the first step that reported it
        self.first_token_s: float | None = None
        self.last_token_s: float | None = None
        self._pending: list[int] = []
        self._released_any = False
        self._waiter: asyncio.Future | None = None
        self._scheduled_event = asyncio.Event()

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def deliver(self, output: RequestOutput, start_s: float, end_s: float) -> list[float]:
        """Take one step's output; returns the inter-token gaps (seconds) it completed."""
        if self.scheduled_s is None:
            self.scheduled_s = start_s
            self._scheduled_event.set()
        self.num_cached_tokens = output.num_cached_tokens
        self.hits = output.hits
        self.num_preemptions = output.num_preemptions
        if output.num_prompt_tokens:
            self.num_prompt_tokens = output.num_prompt_tokens
        gaps: list[float] = []
        if output.new_token_ids:
            if self.first_token_s is None:
                self.first_token_s = end_s
            else:
                gaps.append(end_s - self.last_token_s)  # type: ignore[operator]
            self.last_token_s = end_s
            self.output_token_ids.extend(output.new_token_ids)
            self._pending.extend(output.new_token_ids)
        if output.finished:
            self.finished = True
            self.finish_reason = output.finish_reason
        if (
            self.finished
            or not self._released_any
            and self._pending
            or len(self._pending) >= self.stream_interval
        ):
            self._wake()
        return gaps

    def finish_aborted(self) -> None:
        self.finished = True
        self.finish_reason = FinishReason.ABORT
        self._scheduled_event.set()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_scheduled(self) -> None:
        """Returns once the engine has reported this request (its prefix lookup is done)."""
        await self._scheduled_event.wait()

    async def next_tokens(self) -> list[int] | None:
        """The next batch of released tokens; [] once finished with nothing left; None after that."""
        while not self._pending or (
            not self.finished and self._released_any and len(self._pending) < self.stream_interval
        ):
            if self.finished:
                if self._pending:
                    break
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        batch, self._pending = self._pending, []
        self._released_any = True
        return batch


class DriverObserver(Protocol):
    """Receives what the driver measures (the metrics module implements it)."""

    def observe_step(
        self, result: StepResult, start_s: float, end_s: float, lag_s: float
    ) -> None: ...

    def observe_itl(self, gaps_s: list[float]) -> None: ...

    def observe_finished(self, stream: RequestStream, end_s: float) -> None: ...


EventsHook = Callable[[list[KVEvent]], None]


class EngineDriver:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        stream_interval: int = 1,
        observer: DriverObserver | None = None,
        on_kv_events: EventsHook | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self._sleep = sleep
        self.stream_interval = stream_interval
        self._observer = observer
        self._on_kv_events = on_kv_events
        self._streams: dict[str, RequestStream] = {}
        self._wake_event = asyncio.Event()
        self._stopping = False
        self.deadline_s: float | None = None  # start of the next step; None while idle
        self.num_steps = 0

    # ---- request side (called from HTTP handlers, same event loop) ----

    def submit(self, request: EngineRequest) -> RequestStream:
        stream = RequestStream(request, self.stream_interval)
        self._streams[request.request_id] = stream
        self.engine.add_request(request)
        self._wake_event.set()
        return stream

    def abort(self, request_id: str) -> None:
        """Abort an unfinished request (client went away): the engine frees its blocks."""
        stream = self._streams.pop(request_id, None)
        if stream is None or stream.finished:
            return
        self.engine.abort_request(request_id)
        stream.finish_aborted()
        if self._observer is not None:
            self._observer.observe_finished(stream, self.clock())

    @property
    def num_streams(self) -> int:
        return len(self._streams)

    # ---- step loop ----

    def stop(self) -> None:
        self._stopping = True
        self._wake_event.set()

    async def run(self) -> None:
        while not self._stopping:
            if not self.engine.has_unfinished_requests():
                self.deadline_s = None
                self._wake_event.clear()
                await self._wake_event.wait()
                continue
            await self.step_once()

    async def step_once(self) -> StepResult:
        """Run one step at the current deadline, sleep to its end, deliver its outputs."""
        started_s = self.clock()
        if self.deadline_s is None:
            self.deadline_s = started_s
        start_s = self.deadline_s
        lag_s = started_s - start_s
        result = self.engine.step(start_s)
        duration_s = result.duration_s
        if duration_s <= 0.0 and result.num_scheduled_tokens == 0:
            duration_s = IDLE_POLL_S
        end_s = start_s + duration_s
        self.num_steps += 1
        if result.kv_events and self._on_kv_events is not None:
            self._on_kv_events(result.kv_events)
        if self._observer is not None:
            self._observer.observe_step(result, start_s, end_s, lag_s)
        await self._sleep(max(0.0, end_s - self.clock()))
        self._deliver(result, start_s, end_s)
        self.deadline_s = end_s
        return result

    def _deliver(self, result: StepResult, start_s: float, end_s: float) -> None:
        streams = self._streams
        for output in result.outputs:
            stream = streams.get(output.request_id)
            if stream is None:
                continue  # aborted meanwhile
            gaps = stream.deliver(output, start_s, end_s)
            if self._observer is not None and gaps:
                self._observer.observe_itl(gaps)
            if stream.finished:
                del streams[output.request_id]
                if self._observer is not None:
                    self._observer.observe_finished(stream, end_s)
