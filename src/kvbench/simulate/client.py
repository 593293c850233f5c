"""The simulated client's request path: one turn of one conversation, client -> router -> engine
-> client, in virtual time, producing the same `RequestRecord` a live run writes.

Contract (the live executor's, loadgen/executor.py, with HTTP replaced by modelled delays):
- `send` stamps `sent_s = now`; the request reaches the router `request_delay_s` later, which
  picks an engine; the engine gets it `front_delay_s(prompt tokens)` + the router's modelled
  scheduling time later (body parsing, forwarding, the engine server's prompt handling and block
  hashing: costs that grow with the prompt, measured on the live emulated stack);
- every engine output reaches the client `response_delay_s` after the step that produced it; the
  response ends when the finishing output arrives (usage, headers and tier attribution as the
  engine server and router proxy report them: `x-kvbench-endpoint`,
  `x-kvbench-router-predicted-hit-tokens`, `usage.kvbench`, `prompt_tokens_details.cached_tokens`);
- a request still running `request_timeout_s` after it was sent is aborted in its engine and
  recorded as a timeout; one the engine rejects (too long for max_model_len) is an HTTP 400 error;
- exactly one record per turn goes to `on_record`, then `on_done(state, more)` tells the strategy
  whether the conversation may go on. The answer ids are the engine's own generated ids (the live
  client asks for `return_token_ids`), so the next turn's prompt is what a live run would send;
- `api="chat"`: the turn is the live chat body (history as messages, the answer as the text the
  server streamed), turned into prompt ids by the server's own chat rendering (`front.py`), routed
  as a chat request; the record's prompt tokens come from usage, as live.
Times in records are seconds of virtual time from the cell's start.
"""

from __future__ import annotations

import functools
import itertools
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from kvbench.emulator.api.driver import RequestStream
from kvbench.emulator.api.protocol import ApiError
from kvbench.emulator.api.responses import UsageCounts, response_shape, usage_body
from kvbench.emulator.api.tokenizer import IncrementalDecoder
from kvbench.emulator.engine.interface import EngineRequest
from kvbench.emulator.router.request import RouterRequest
from kvbench.emulator.router.scheduler import Decision
from kvbench.loadgen.history import ConversationState
from kvbench.loadgen.outcome import RequestOutcome
from kvbench.loadgen.recorder import ReuseTracker, fill_from_outcome
from kvbench.results.records import Phase, RequestRecord, RequestStatus
from kvbench.simulate.engine_node import SimEngine, SimStream
from kvbench.simulate.events import EventLoop
from kvbench.simulate.front import PromptFront, ServedPrompt
from kvbench.simulate.router_node import SimRouter

_USAGE_SHAPE = response_shape("0.11")  # the simulated client reads counts only

TurnDone = Callable[[ConversationState, bool], None]


@dataclass(frozen=True, slots=True)
class ClientTiming:
    """Modelled HTTP path costs (loopback, one client process), fitted to the live emulated stack
    (benchmarks/simulator/agreement.py): ~1 ms for a short prompt, ~1.6 ms more for 10k tokens."""

    request_delay_s: float = 0.0006  # client -> router -> engine, fixed part
    # router proxy + engine server per prompt token (JSON, token checks, block hashing): at low
    # load the live TTFT exceeded the simulated one by 4.1 ms at 256 tokens and 6.5 ms at 10.6k
    # (less the engine's wake-up, engine_node.IDLE_WAKE_S, and the router's scheduling)
    front_s_per_prompt_token: float = 0.15e-6
    response_delay_s: float = 0.0002  # engine -> router -> client, per chunk

    def front_delay_s(self, prompt_tokens: int) -> float:
        return self.front_s_per_prompt_token * prompt_tokens


@dataclass(slots=True, weakref_slot=True)
class _InFlight:
    record: RequestRecord
    state: ConversationState
    outcome: RequestOutcome
    on_done: TurnDone
    engine_request_id: str = ""
    engine: SimEngine | None = None
    stream: SimStream | None = None  # the engine's stream of this turn, once submitted
    decision: Decision | None = None
    output_ids: list[int] = field(default_factory=list)
    done: bool = False
    messages: list[dict] | None = None  # chat: the body's messages
    decoder: IncrementalDecoder | None = None  # chat: the streamed answer text
    text_parts: list[str] = field(default_factory=list)


class SimClient:
    def __init__(
        self,
        loop: EventLoop,
        router: SimRouter,
        model_name: str,
        request_timeout_s: float,
        prompt_tokens_details: bool,
        front: PromptFront,
        api: str = "completions",
        timing: ClientTiming = ClientTiming(),
    ) -> None:
        self.loop = loop
        self.front = front
        self.chat = api == "chat"
        self.router = router
        self.model_name = model_name
        self.request_timeout_s = request_timeout_s
        self.prompt_tokens_details = prompt_tokens_details
        self.timing = timing
        self._engine_ids = itertools.count(1)
        self.in_flight = 0
        self.peak_in_flight = 0

    def level(
        self,
        cell_id: str,
        level: float,
        on_record: Callable[[RequestRecord], None],
        record_phase: Phase | None = None,
    ) -> LevelSender:
        return LevelSender(self, cell_id, level, on_record, record_phase)


class LevelSender:
    """The client for one level: request ids, reuse tracking and counts are per level, as live."""

    def __init__(
        self,
        client: SimClient,
        cell_id: str,
        level: float,
        on_record: Callable[[RequestRecord], None],
        record_phase: Phase | None = None,
    ) -> None:
        self.client = client
        self.record_phase = record_phase  # a prime level: every record's phase (LevelPlan)
        self.loop = client.loop
        self.cell_id = cell_id
        self.level = level
        self.on_record = on_record
        self._sequence = itertools.count()
        self._reuse = ReuseTracker()
        self.counts: Counter[str] = Counter()
        self.sent = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    # ---- one turn
    def send(
        self, state: ConversationState, scheduled_s: float, phase: Phase, on_done: TurnDone
    ) -> None:
        now_s = self.loop.now_s
        turn_index = state.next_turn_index
        messages: list[dict] | None = None
        if self.client.chat:  # the live executor's chat body and its prompt-token estimate
            messages = state.chat_messages()
            prompt_ids: list[int] = []
            prompt_tokens = state.history_tokens + len(state.turn.question_token_ids)
        else:
            prompt_ids = state.prompt_ids()
            prompt_tokens = len(prompt_ids)
        record = RequestRecord(
            request_id=f"{self.cell_id}-{next(self._sequence)}-{state.conversation_id}-t{turn_index}",
            conversation_id=state.conversation_id,
            turn_index=turn_index,
            cell_id=self.cell_id,
            phase=(self.record_phase or phase).value,
            scheduled_s=scheduled_s,
            prompt_tokens=prompt_tokens,
            prefix_group=state.conversation.prefix_group,
            level=self.level,
            history_synthesized=False,
        )
        facts = self._reuse.on_send(
            prefix_group=state.conversation.prefix_group,
            conversation_id=state.conversation_id,
            turn_index=turn_index,
            prefix_tokens=len(state.conversation.prefix_token_ids),
            history_tokens=state.history_tokens,
            prompt_tokens=record.prompt_tokens,
            sent_s=now_s,
        )
        record.reused_prefix_tokens = facts.reused_prefix_tokens
        record.reuse_distance_tokens = facts.reuse_distance_tokens
        record.reuse_distance_s = facts.reuse_distance_s
        flight = _InFlight(record, state, RequestOutcome(sent_perf=now_s), on_done)
        flight.messages = messages
        self.sent += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        timing = self.client.timing
        self.loop.after(timing.request_delay_s, lambda: self._arrive(flight, prompt_ids))
        # The timeout holds the turn weakly: a finished turn is referenced by no pending action
        # (nor by an engine), so its outcome and routing decision are freed at once, not kept for
        # the whole request_timeout_s (a timeout of a finished turn does nothing either way).
        turn = weakref.ref(flight)
        self.loop.after(self.client.request_timeout_s, lambda: self._timeout_if_alive(turn))

    def _arrive(self, flight: _InFlight, prompt_ids: list[int]) -> None:
        if flight.done:
            return
        client = self.client
        engine_request_id = f"cmpl-sim{next(client._engine_ids):010x}-0"
        chat = flight.messages is not None
        try:
            served: ServedPrompt | None = self._served_prompt(flight, prompt_ids)
            refused: ApiError | None = None
        except ApiError as err:  # the engine server will answer 400 (the router routes it first)
            served, refused = None, err
        prompt_tokens = len(served.token_ids) if served is not None else len(prompt_ids)
        routed = RouterRequest(
            request_id=flight.record.request_id,
            model=client.model_name,
            is_chat=chat,
            prompt_token_ids=None if chat else prompt_ids,
            messages=flight.messages,
        )
        decision, engine = client.router.route(routed, prompt_tokens)
        flight.decision, flight.engine = decision, engine
        flight.outcome.headers = {
            "x-kvbench-endpoint": engine.address,
            "x-kvbench-router-predicted-hit-tokens": str(decision.predicted_hit_tokens),
        }
        delay_s = decision.scheduling_s + client.timing.front_delay_s(prompt_tokens)
        if served is None:
            assert refused is not None
            self.loop.after(delay_s, lambda: self._refuse(flight, refused))
            return
        self.loop.after(delay_s, lambda: self._submit(flight, engine, served, engine_request_id))

    def _submit(
        self, flight: _InFlight, engine: SimEngine, served: ServedPrompt, engine_request_id: str
    ) -> None:
        if flight.done:
            return  # timed out on the way
        request = EngineRequest(
            request_id=engine_request_id,
            prompt_token_ids=served.token_ids,
            max_tokens=served.max_tokens,
            arrival_s=self.loop.now_s,
            ignore_eos=True,
        )
        # completions hear only the finishing output (their chunks are read off the stream);
        # chat decodes the answer text chunk by chunk, as the live client receives it
        every_output = flight.messages is not None
        try:
            flight.stream = engine.submit(
                request, functools.partial(self._output, flight), every_output
            )
        except ValueError as err:  # the engine refuses it (e.g. longer than max_model_len)
            self._refuse(flight, err)
            return
        flight.engine_request_id = engine_request_id
        flight.outcome.http_status = 200
        if flight.messages is not None:
            flight.decoder = self.client.front.decoder()

    def _refuse(self, flight: _InFlight, err: Exception) -> None:
        """The engine server's HTTP 400, back at the client one response delay later."""
        if flight.done:
            return
        flight.outcome.http_status = 400
        flight.outcome.fail(RequestStatus.ERROR, f"HTTP 400: {err}")
        self._finish(flight, self.loop.now_s + self.client.timing.response_delay_s)

    def _served_prompt(self, flight: _InFlight, prompt_ids: list[int]) -> ServedPrompt:
        """What the engine server makes of the body (raises ApiError: its HTTP 400)."""
        front, max_tokens = self.client.front, flight.state.turn.output_tokens
        if flight.messages is not None:
            return front.chat(flight.messages, max_tokens)
        return front.completion(prompt_ids, max_tokens)

    def _read_chunks(self, flight: _InFlight) -> None:
        """A completion's chunk arrivals, read off its stream: every delivery that brought tokens,
        one response delay after its step ended (what appending at each delivery gives)."""
        if flight.messages is not None or flight.stream is None:
            return  # chat appends at each delivery (_output); never submitted: no chunks
        delay_s = self.client.timing.response_delay_s
        flight.outcome.chunk_arrivals = [
            (end_s + delay_s, tokens) for end_s, tokens in flight.stream.token_chunks
        ]

    def _output(self, flight: _InFlight, stream: RequestStream, end_s: float, tokens: int) -> None:
        """Every output of a chat turn; only the finishing one of a completion (see _submit)."""
        if flight.done:
            return
        arrival_s = end_s + self.client.timing.response_delay_s
        if tokens and flight.decoder is not None:
            flight.outcome.chunk_arrivals.append((arrival_s, tokens))
            new_ids = stream.output_token_ids[-tokens:]
            flight.text_parts.append(flight.decoder.push(new_ids, final=stream.finished))
        if not stream.finished:
            return
        self._read_chunks(flight)
        flight.outcome.output_token_ids = list(stream.output_token_ids)
        flight.outcome.token_ids_returned = True
        counts = UsageCounts(
            stream.num_prompt_tokens,
            len(stream.output_token_ids),
            stream.num_cached_tokens,
            stream.hits,
        )  # the usage chunk of a streamed completion, as the engine server sends it
        flight.outcome.usage = usage_body(
            _USAGE_SHAPE,
            counts,
            self.client.prompt_tokens_details,
            chat=flight.messages is not None,
            final_chunk=True,
        )
        flight.outcome.done_seen = True
        self.loop.at(arrival_s, lambda: self._finish(flight, arrival_s))

    def _timeout_if_alive(self, turn: weakref.ref[_InFlight]) -> None:
        flight = turn()
        if flight is not None:
            self._timeout(flight)

    def _timeout(self, flight: _InFlight) -> None:
        if flight.done:
            return
        timeout_s = self.client.request_timeout_s
        if flight.engine is not None:  # first: the stream then holds every token delivered
            flight.engine.abort(flight.engine_request_id)
        self._read_chunks(flight)
        flight.outcome.fail(
            RequestStatus.TIMEOUT,
            f"request timed out after {timeout_s:g} s "
            f"({flight.outcome.streamed_tokens} tokens received)",
        )
        self._finish(flight, self.loop.now_s)

    def _finish(self, flight: _InFlight, end_s: float) -> None:
        if flight.done:
            return
        flight.done = True
        outcome, record = flight.outcome, flight.record
        outcome.end_perf = end_s
        if flight.decision is not None:
            self.client.router.complete(flight.decision, end_s - outcome.sent_perf)
        fill_from_outcome(record, outcome, 0.0)
        ok = outcome.status == RequestStatus.OK.value
        # chat: the history is the answer text (live keeps no ids for chat, as executor.py)
        answer_ids = outcome.output_token_ids if ok and flight.messages is None else None
        answer_text = "".join(flight.text_parts)
        flight.state.finish_turn(ok, answer_ids, answer_text, record.output_tokens)
        self.counts[record.status] += 1
        self.in_flight -= 1
        self.on_record(record)
        flight.on_done(flight.state, flight.state.has_next_turn)
