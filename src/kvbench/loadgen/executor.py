"""Run one turn of one conversation: build the request, send it, record it, advance the history.

Contract: `run_turn` always produces exactly one `RequestRecord` and hands it to `on_record` (also
when the request fails or is cancelled; on cancel it re-raises after recording). It returns
whether the conversation may go on (the turn succeeded and more turns remain).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable

from kvbench.loadgen.history import ConversationState
from kvbench.loadgen.monitor import ClientMonitor
from kvbench.loadgen.outcome import RequestOutcome
from kvbench.loadgen.plan import EndpointConfig, ProgressUpdate
from kvbench.loadgen.recorder import ReuseTracker, fill_from_outcome
from kvbench.loadgen.transport import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    Capabilities,
    OpenAIClient,
    chat_body,
    completions_body,
)
from kvbench.results.records import Phase, RequestRecord, RequestStatus


class TurnExecutor:
    def __init__(
        self,
        *,
        client: OpenAIClient,
        endpoint: EndpointConfig,
        caps: Capabilities,
        cell_id: str,
        level: float,
        run_t0_perf: float,
        monitor: ClientMonitor,
        on_record: Callable[[RequestRecord], None],
        on_progress: Callable[[ProgressUpdate], None] | None,
        level_start_perf: float,
        record_phase: Phase | None = None,
    ) -> None:
        self._client = client
        # A level that only primes the cache: every record is `record_phase`, whatever the window.
        self._record_phase = record_phase
        self._endpoint = endpoint
        self._caps = caps
        self._cell_id = cell_id
        self._level = level
        self._t0 = run_t0_perf
        self._monitor = monitor
        self._on_record = on_record
        self._on_progress = on_progress
        self._level_start_perf = level_start_perf
        self._reuse = ReuseTracker()
        self._sequence = itertools.count()
        self.counts: Counter[str] = Counter()
        self.output_tokens = 0  # of successful requests, for the live tok/s
        self.in_flight = 0
        self.peak_in_flight = 0
        self.sent = 0

    async def run_turn(self, state: ConversationState, scheduled_perf: float, phase: Phase) -> bool:
        record, path, body = self._prepare(state, scheduled_perf, phase)
        sent_perf = time.perf_counter()
        self._note_send(record, state, sent_perf, scheduled_perf)
        outcome = RequestOutcome(sent_perf=sent_perf)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.sent += 1
        try:
            await self._client.send(
                path,
                body,
                outcome,
                stream=self._endpoint.stream,
                request_id=record.request_id,
                timeout_s=self._endpoint.request_timeout_s,
            )
        finally:  # also on cancel: the record is written, then CancelledError goes on up
            self.in_flight -= 1
            self._finish(record, state, outcome)
        return state.has_next_turn

    def _prepare(self, state: ConversationState, scheduled_perf: float, phase: Phase):
        turn_index = state.next_turn_index
        request_id = f"{self._cell_id}-{next(self._sequence)}-{state.conversation_id}-t{turn_index}"
        max_tokens = state.turn.output_tokens
        if self._endpoint.api == "chat":
            body = chat_body(
                self._endpoint.model_name,
                state.chat_messages(),
                max_tokens,
                self._caps,
                self._endpoint.stream,
            )
            path, prompt_tokens = (
                CHAT_PATH,
                state.history_tokens + len(state.turn.question_token_ids),
            )
        else:
            prompt_ids = state.prompt_ids()
            body = completions_body(
                self._endpoint.model_name, prompt_ids, max_tokens, self._caps, self._endpoint.stream
            )
            path, prompt_tokens = COMPLETIONS_PATH, len(prompt_ids)
        record = RequestRecord(
            request_id=request_id,
            conversation_id=state.conversation_id,
            turn_index=turn_index,
            cell_id=self._cell_id,
            phase=(self._record_phase or phase).value,
            scheduled_s=scheduled_perf - self._t0,
            prompt_tokens=prompt_tokens,
            prefix_group=state.conversation.prefix_group,
            level=self._level,
            history_synthesized=self._history_synthesized(state),
        )
        return record, path, body

    def _history_synthesized(self, state: ConversationState) -> bool:
        if self._endpoint.api == "chat":
            return False
        return (not self._caps.return_token_ids) or state.synthesized_any

    def _note_send(
        self,
        record: RequestRecord,
        state: ConversationState,
        sent_perf: float,
        scheduled_perf: float,
    ) -> None:
        facts = self._reuse.on_send(
            prefix_group=state.conversation.prefix_group,
            conversation_id=state.conversation_id,
            turn_index=record.turn_index,
            prefix_tokens=len(state.conversation.prefix_token_ids),
            history_tokens=state.history_tokens,
            prompt_tokens=record.prompt_tokens,
            sent_s=sent_perf - self._t0,
        )
        record.reused_prefix_tokens = facts.reused_prefix_tokens
        record.reuse_distance_tokens = facts.reuse_distance_tokens
        record.reuse_distance_s = facts.reuse_distance_s
        self._monitor.on_dispatch((sent_perf - scheduled_perf) * 1000.0)

    def _finish(
        self, record: RequestRecord, state: ConversationState, outcome: RequestOutcome
    ) -> None:
        fill_from_outcome(record, outcome, self._t0)
        ok = outcome.status == RequestStatus.OK.value
        answer_ids = None
        if self._endpoint.api != "chat" and outcome.token_ids_returned:
            answer_ids = outcome.output_token_ids
        state.finish_turn(ok, answer_ids, "".join(outcome.output_text_parts), record.output_tokens)
        self.counts[record.status] += 1
        if ok:
            self.output_tokens += record.output_tokens
        self._on_record(record)
        if self._on_progress is not None:
            self._on_progress(self.progress())

    def progress(self) -> ProgressUpdate:
        done = sum(self.counts.values())
        return ProgressUpdate(
            cell_id=self._cell_id,
            done=done,
            ok=self.counts[RequestStatus.OK.value],
            errors=done - self.counts[RequestStatus.OK.value],
            in_flight=self.in_flight,
            elapsed_s=time.perf_counter() - self._level_start_perf,
            output_tokens=self.output_tokens,
        )
