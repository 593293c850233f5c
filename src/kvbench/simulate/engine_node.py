"""One emulated engine stepping on the virtual clock, with the metrics its /metrics would show.

Timeline contract (the real-time driver's, emulator/api/driver.py, without the sleeping):
- a busy period starts `IDLE_WAKE_S` after a request arrives at an idle engine (the live engine
  server's wake-up: fitted to the live emulated stack, where a request reaching an idle engine
  got its first token ~4 ms later than the cost model alone gives, whatever its prompt length;
  a busy engine shows no such gap); step n starts at the end of step n - 1; `engine.step(start_s)` plans it and its outputs are delivered at `start_s + duration_s`
  (a step that schedules nothing lasts `IDLE_POLL_S`, as in the real-time driver);
- KV events of a step leave when the step is planned (the real-time driver publishes them before it
  sleeps); `on_kv_events(start_s, events)` hands them on;
- the engine idles (no events at all) while it has no unfinished request;
- lag is always 0: virtual time never falls behind its deadlines;
- an engine whose unfinished requests get nothing scheduled for `STALL_IDLE_S` of virtual time in
  a row (idle polls only, across request timeouts) raises `SimulationStalled`: a request that can
  never be scheduled would otherwise make it poll forever, each retry ending by its timeout.
Metrics are the real engine server's `ServerMetrics` (same names, labels, buckets), observed with
the same per-step / per-token / per-request calls the real-time driver makes.
"""

from __future__ import annotations

from collections.abc import Callable

from kvbench.emulator.api.driver import IDLE_POLL_S, RequestStream
from kvbench.emulator.api.metrics import ServerMetrics
from kvbench.emulator.engine.engine import EmulatedEngine
from kvbench.emulator.engine.interface import EngineRequest, KVEvent, RequestOutput, StepResult
from kvbench.simulate.events import EventLoop, SimulationStalled

# (stream, arrival_s of the new tokens, how many new tokens) for every output of a step.
OutputListener = Callable[[RequestStream, float, int], None]
KVEventsHook = Callable[[float, list[KVEvent]], None]
IDLE_WAKE_S = 0.004
STALL_IDLE_S = 60.0  # steps that schedule nothing, this much virtual time in a row: stalled


class SimStream(RequestStream):
    """A request stream nobody awaits (the simulated client reads the stream in its listener, at
    each delivery or only at the end): `deliver` keeps every stamp and count
    `RequestStream.deliver` keeps and returns the same gaps, without the queue of tokens released
    to an awaiting HTTP handler; `token_chunks` keeps (step end, new tokens) of every delivery
    that brought tokens, in order (what a listener called at each delivery would have seen)."""

    def __init__(self, request: EngineRequest, stream_interval: int) -> None:
        super().__init__(request, stream_interval)
        self.token_chunks: list[tuple[float, int]] = []

    def deliver(self, output: RequestOutput, start_s: float, end_s: float) -> list[float]:
        gaps: list[float] = []
        self.deliver_into(output, start_s, end_s, gaps)
        return gaps

    def deliver_into(
        self, output: RequestOutput, start_s: float, end_s: float, gaps: list[float]
    ) -> None:
        """`deliver`, its gaps appended to `gaps` (the engine collects a step's gaps in one list)."""
        if self.scheduled_s is None:
            self.scheduled_s = start_s
        self.num_cached_tokens = output.num_cached_tokens
        self.hits = output.hits
        self.num_preemptions = output.num_preemptions
        if output.num_prompt_tokens:
            self.num_prompt_tokens = output.num_prompt_tokens
        new_token_ids = output.new_token_ids
        if new_token_ids:
            if self.first_token_s is None:
                self.first_token_s = end_s
            else:
                gaps.append(end_s - self.last_token_s)  # type: ignore[operator]
            self.last_token_s = end_s
            self.output_token_ids += new_token_ids
            self.token_chunks.append((end_s, len(new_token_ids)))
        if output.finished:
            self.finished = True
            self.finish_reason = output.finish_reason


class SimEngine:
    def __init__(
        self,
        loop: EventLoop,
        engine: EmulatedEngine,
        metrics: ServerMetrics,
        address: str,
        on_kv_events: KVEventsHook | None = None,
    ) -> None:
        self.loop = loop
        self.engine = engine
        self.metrics = metrics
        self.address = address  # host:port identity, as the router keys endpoints
        self.on_kv_events = on_kv_events
        # request id -> (stream, listener, whether the listener hears every output)
        self._streams: dict[str, tuple[SimStream, OutputListener, bool]] = {}
        self.busy = False
        self.num_steps = 0
        self.idle_steps_in_a_row = 0  # steps that scheduled nothing (a stall shows here)
        self.idle_s_in_a_row = 0.0  # ... and their virtual time (engine idle periods not counted)

    # ---- request side
    def submit(
        self, request: EngineRequest, listener: OutputListener, every_output: bool = True
    ) -> SimStream:
        """Raises ValueError for a request the engine rejects (the HTTP layer answers 400). The
        listener hears every output, or with `every_output=False` only the finishing one (the
        stream's `token_chunks` then says what the others brought)."""
        stream = SimStream(request, stream_interval=1)
        self.engine.add_request(request)
        self._streams[request.request_id] = (stream, listener, every_output)
        self._wake()
        return stream

    def abort(self, request_id: str) -> None:
        entry = self._streams.pop(request_id, None)
        if entry is None or entry[0].finished:
            return
        self.engine.abort_request(request_id)
        entry[0].finish_aborted()
        self.metrics.observe_finished(entry[0], self.loop.now_s)

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    # ---- stepping
    def _wake(self) -> None:
        if not self.busy:
            self.busy = True
            self.loop.at(self.loop.now_s + IDLE_WAKE_S, self._step)

    def _step(self) -> None:
        engine = self.engine
        if not engine.has_unfinished_requests():
            self.busy = False
            return
        start_s = self.loop.now_s
        result = engine.step(start_s)
        duration_s = result.duration_s
        if duration_s <= 0.0 and result.num_scheduled_tokens == 0:
            duration_s = IDLE_POLL_S
        end_s = start_s + duration_s
        self.num_steps += 1
        if result.num_scheduled_tokens:
            self.idle_steps_in_a_row, self.idle_s_in_a_row = 0, 0.0
        else:
            self.idle_steps_in_a_row += 1
            self.idle_s_in_a_row += duration_s
            if self.idle_s_in_a_row >= STALL_IDLE_S:
                raise SimulationStalled(self._stall_reason())
        if result.kv_events and self.on_kv_events is not None:
            self.on_kv_events(start_s, result.kv_events)
        self.metrics.observe_step(result, start_s, end_s, 0.0)
        self.loop.at(end_s, lambda: self._end_step(result, start_s, end_s))

    def _stall_reason(self) -> str:
        scheduler = self.engine.scheduler
        waiting = list(scheduler.waiting)
        longest = max((len(r.all_token_ids) for r in waiting), default=0)
        return (
            f"{self.address} scheduled nothing for {STALL_IDLE_S:g} s of simulated time "
            f"({len(waiting)} waiting, {len(scheduler.running)} running; longest waiting prompt "
            f"{longest} tokens, {self.engine.pool.num_gpu_blocks} GPU blocks of "
            f"{self.engine.kv.block_size} tokens): a request that can never be scheduled"
        )

    def _end_step(self, result: StepResult, start_s: float, end_s: float) -> None:
        streams, metrics = self._streams, self.metrics
        gaps_s: list[float] = []  # the step's inter-token gaps, in output order
        for output in result.outputs:
            entry = streams.get(output.request_id)
            if entry is None:
                continue  # aborted meanwhile
            stream, listener, every_output = entry
            stream.deliver_into(output, start_s, end_s, gaps_s)
            if stream.finished:
                del streams[output.request_id]
                metrics.observe_finished(stream, end_s)
            elif not every_output:
                continue
            listener(stream, end_s, len(output.new_token_ids))
        if gaps_s:  # observed once per step: nothing reads the histogram within a step's delivery
            metrics.observe_itl(gaps_s)
        self._step()
