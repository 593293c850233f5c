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
from kvbench.emulator.engine.request import Request
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

    def take_run(
        self, all_token_ids: list[int], step_ends_s: list[float], first: int, last: int
    ) -> None:
        """The deliveries of engine steps `first`..`last` of a decode run, one token each (the
        request's next output tokens, from its materialized `all_token_ids`), ending at
        `step_ends_s[step]`: what `deliver_into` records for those outputs. Their inter-token
        gaps were observed when the steps were delivered."""
        if last < first:
            return
        start = len(self.request.prompt_token_ids) + len(self.output_token_ids)
        self.output_token_ids += all_token_ids[start : start + last - first + 1]
        ends_s = step_ends_s[first : last + 1]
        self.token_chunks += [(end_s, 1) for end_s in ends_s]
        self.last_token_s = ends_s[-1]


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
        # request id -> (stream, listener, whether the listener hears every output, engine state)
        self._streams: dict[str, tuple[SimStream, OutputListener, bool, Request]] = {}
        # Decode runs (engine/decode_run.py): their members' tokens are in no step's outputs;
        # each step's end is kept (by engine step index) to deliver them when a run ends.
        self.runs_on = engine.enable_decode_runs(self._run_ended)
        self._step_ends_s: list[float] = []
        self._last_delivered_step = -1
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
        if every_output and self.runs_on:
            self.engine.keep_out_of_runs(request.request_id)  # its listener hears every token
        req = self.engine.requests[request.request_id]
        self._streams[request.request_id] = (stream, listener, every_output, req)
        self._wake()
        return stream

    def abort(self, request_id: str) -> None:
        """Abort a request; its stream then holds every token delivered so far."""
        entry = self._streams.get(request_id)
        if entry is None or entry[0].finished:
            self._streams.pop(request_id, None)
            return
        self.engine.abort_request(request_id)  # a decode run it is in ends (_run_ended)
        del self._streams[request_id]
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
        if self.runs_on:
            self._step_ends_s.append(end_s)  # at the engine's step index
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

    def _run_ended(self, req: Request, join: int, last: int) -> None:
        """A decode run of `req` ended, its tokens materialized through engine step `last`: its
        stream takes the run's delivered steps (a step still in flight is not delivered)."""
        entry = self._streams.get(req.request_id)
        if entry is not None:
            last = min(last, self._last_delivered_step)
            entry[0].take_run(req.all_token_ids, self._step_ends_s, join, last)

    def _end_step(self, result: StepResult, start_s: float, end_s: float) -> None:
        streams, metrics = self._streams, self.metrics
        gaps_s: list[float] = []  # the step's inter-token gaps, in output order
        runs = self.engine.runs
        gap_seqs: list[int] | None = None  # with decode-run members: whose each gap is
        if runs is not None:
            self._last_delivered_step = runs.step_index
            if runs.members_in_last_step:
                gap_seqs = []
        for output in result.outputs:
            entry = streams.get(output.request_id)
            if entry is None:
                continue  # aborted meanwhile
            stream, listener, every_output, req = entry
            num_gaps = len(gaps_s)
            stream.deliver_into(output, start_s, end_s, gaps_s)
            if gap_seqs is not None and len(gaps_s) > num_gaps:
                gap_seqs.append(req.running_seq)
            if stream.finished:
                del streams[output.request_id]
                metrics.observe_finished(stream, end_s)
            elif not every_output:
                continue
            listener(stream, end_s, len(output.new_token_ids))
        if gap_seqs is not None:
            gaps_s = self._with_member_gaps(gaps_s, gap_seqs, end_s - start_s)
        if gaps_s:  # observed once per step: nothing reads the histogram within a step's delivery
            metrics.observe_itl(gaps_s)
        self._step()

    def _with_member_gaps(
        self, gaps_s: list[float], gap_seqs: list[int], gap_s: float
    ) -> list[float]:
        """The step's gaps (`gap_seqs`: the running_seq of each one's request) with its
        decode-run members' (one token a step, so each gap is the step's own length), in the
        running order the general path gives outputs in. When every gap is the same float the
        order changes nothing (the histogram adds them one by one)."""
        runs = self.engine.runs
        assert runs is not None  # called only with members
        count = runs.members_in_last_step
        if all(gap == gap_s for gap in gaps_s):
            gaps_s += [gap_s] * count
            return gaps_s
        step = runs.step_index
        ordered = list(zip(gap_seqs, gaps_s))
        members = [(r.running_seq, gap_s) for r in runs.members.values() if r.run_join <= step]
        assert len(members) == count, "the step's decode-run members miscounted"
        ordered += members
        ordered.sort()
        return [gap for _, gap in ordered]
