"""The emulated engine: schedule -> cost -> postprocess, once per `step(now_s)` (implements
`interface.Engine`). It never reads a clock; the driver passes `now_s` and owns time.

Per step:
1. `connector.poll(now_s)`: finished async loads unpark requests; finished stores free held blocks.
2. `scheduler.schedule(now_s)` -> StepPlan (advances num_computed_tokens).
3. `connector.build_step(chunks, now_s)` -> StepTransfer (stores; synchronous transfer time).
4. duration = cost model over the plan's work + the transfer time the step must wait for.
5. postprocess: every request whose computed tokens caught up with its tokens samples one token
   (deterministic, see request.generated_token_id); stops at max_tokens or max_model_len (EOS is
   not modelled, so ignore_eos changes nothing); finished requests release their blocks unless
   the connector still reads them.
KV events of the step = the block pool's (GPU) followed by the connector's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kvbench.emulator.engine.block_pool import BlockPool
from kvbench.emulator.engine.connector import KVConnector
from kvbench.emulator.engine.cost_model import CostModel
from kvbench.emulator.engine.decode_run import DecodeRuns, RunEnded
from kvbench.emulator.engine.hashing import BlockHasher
from kvbench.emulator.engine.interface import (
    EngineRequest,
    EngineStats,
    FinishReason,
    KVEvent,
    RequestOutput,
    StepResult,
)
from kvbench.emulator.engine.kv_manager import KVCacheManager
from kvbench.emulator.engine.request import Request, RequestStatus, generated_token_id
from kvbench.emulator.engine.scheduler import Scheduler, StepPlan

# Time constant of the engine's output-rate average: the API server's lag is a queue that
# empties within tens of ms once streaming stops (on the H200 the lone request of the probe's
# point after a burst of 256 streams showed no lag), so the average follows the last few dozen
# steps, and decays while the engine idles.
OUTPUT_RATE_WINDOW_S = 0.05
# A step starting within this of its predecessor's end follows it back to back (the real-time
# driver's own scheduling jitter stays below it; the simulated one has none).
BACK_TO_BACK_S = 1e-3


@dataclass(slots=True)
class EngineCounters:
    """Monotonic counters the engine keeps itself (the rest live in the KV manager / scheduler)."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    prompt_tokens_by_source: dict[str, int] = field(
        default_factory=lambda: {
            "local_compute": 0,
            "local_cache_hit": 0,
            "external_kv_transfer": 0,
        }
    )
    request_success: dict[str, int] = field(default_factory=dict)


class EmulatedEngine:
    def __init__(
        self,
        scheduler: Scheduler,
        pool: BlockPool,
        kv: KVCacheManager,
        cost: CostModel,
        hasher: BlockHasher,
        vocab_size: int,
        max_model_len: int,
        connector: KVConnector | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.pool = pool
        self.kv = kv
        self.cost = cost
        self.hasher = hasher
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.connector = connector
        self.requests: dict[str, Request] = {}
        self.held: dict[str, Request] = {}  # finished, blocks held until the connector's store ends
        self.counters = EngineCounters()
        self._pending_events: list[KVEvent] = []
        self._last_now_s = 0.0  # the latest step's start: the time an abort between steps is given
        # Output tokens per second, an exponential average over OUTPUT_RATE_WINDOW_S of steps: the
        # load on the API server that delays new requests (CostModel.request_delay_s).
        # Idle time counts as steps of no output: the average decays over it (`_output_rate_at`).
        self.output_rate_tok_s = 0.0
        self._output_rate_at_s = 0.0  # the time the average is current to (the last step's end)
        self._last_schedulable_s = 0.0  # the API server hands requests on in arrival order
        self._busy_until_s = -1.0  # the latest step's end, if it ran anything (else -1)
        self.runs: DecodeRuns | None = None  # decode runs (decode_run.py), once enabled

    # ---- Engine protocol
    def add_request(self, request: EngineRequest) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in the engine")
        if not request.prompt_token_ids:
            raise ValueError("prompt must have at least one token")
        if len(request.prompt_token_ids) >= self.max_model_len:
            raise ValueError(
                f"prompt of {len(request.prompt_token_ids)} tokens does not fit "
                f"max_model_len {self.max_model_len}"
            )
        if request.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        req = Request(request)
        delay_s = self.cost.request_delay_s(
            req.num_prompt_tokens, self._output_rate_at(req.arrival_s), len(self.requests)
        )
        if delay_s > 0.0:
            req.schedulable_s = max(self._last_schedulable_s, req.arrival_s + delay_s)
            self._last_schedulable_s = req.schedulable_s
        self.hasher.extend(req.all_token_ids, req.block_hashes, req.cache_salt)
        self.requests[req.request_id] = req
        self.scheduler.waiting.append(req)

    def abort_request(self, request_id: str) -> None:
        req = self.requests.pop(request_id, None)
        if req is None:
            return
        if req.status is RequestStatus.RUNNING:
            self.scheduler.remove_running({request_id})
        else:
            self.scheduler.remove_waiting(req)
        if req.run_join >= 0 and self.runs is not None:
            self.runs.leave_between_steps(req)
        req.finish_reason = FinishReason.ABORT
        self._release(req, now_s=self._last_now_s)

    def has_unfinished_requests(self) -> bool:
        """True while requests run or wait, and while finished requests' blocks are still held by a
        connector store (vLLM's engine keeps stepping, polling the connector, until those finish)."""
        return bool(self.requests) or bool(self.held)

    def step(self, now_s: float) -> StepResult:
        admit_by_s = self._admission_cutoff_s(now_s)
        self._last_now_s = now_s
        if self.connector is not None:
            self._poll_connector(now_s)
        runs = self.runs
        if runs is not None:
            runs.begin_step()
        plan = self.scheduler.schedule(now_s, admit_by_s)
        num_implicit = 0  # decode-run members' tokens: sampled, reported in no output
        if runs is not None:
            num_implicit = runs.members_in_last_step = runs.num_members
        blocking_s = 0.0
        if self.connector is not None:
            transfer = self.connector.build_step(self.scheduler.connector_chunks(plan), now_s)
            blocking_s = transfer.blocking_s + self.cost.store_stall_s(transfer.stored_bytes)
        ran = bool(plan.scheduled) or num_implicit > 0
        if ran:
            duration_s = self.cost.step_duration_s(plan.work) + blocking_s
        else:  # nothing to run (e.g. every request waits for a KV load): an idle engine-loop turn
            duration_s = self.cost.idle_step_s() + blocking_s
        outputs = self._postprocess(plan, now_s, num_implicit)
        self._update_output_rate(len(outputs) + num_implicit, now_s, duration_s)
        # a step that ran nothing leaves no batch in flight: the next one is planned when it starts
        self._busy_until_s = now_s + duration_s if ran else -1.0
        return StepResult(
            duration_s=duration_s,
            outputs=outputs,
            kv_events=self.take_kv_events(),
            num_scheduled_tokens=plan.work.num_tokens,
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
        )

    def reset_prefix_cache(self) -> bool:
        if not self.pool.reset_prefix_cache():
            return False
        if self.connector is not None:
            self.connector.reset()
        return True

    def stats(self) -> EngineStats:
        c, kv_stats, sched = self.counters, self.kv.stats, self.scheduler
        return EngineStats(
            num_requests_running=len(sched.running),
            num_requests_waiting=len(sched.waiting),
            kv_cache_usage_perc=self.pool.usage(),
            num_gpu_blocks=self.pool.num_gpu_blocks,
            block_size=self.kv.block_size,
            prefix_cache_queries=kv_stats.queries,
            prefix_cache_hits=kv_stats.hits,
            external_prefix_cache_queries=sched.external_stats.queries,
            external_prefix_cache_hits=sched.external_stats.hits,
            num_preemptions=sched.num_preemptions,
            prompt_tokens=c.prompt_tokens,
            generation_tokens=c.generation_tokens,
            prompt_tokens_by_source=dict(c.prompt_tokens_by_source),
            prompt_tokens_cached_by_source=dict(sched.cached_tokens_by_source),
            request_success=dict(c.request_success),
            connector_metrics=self.connector.metrics() if self.connector is not None else {},
        )

    # ---- beyond the protocol
    def enable_decode_runs(self, on_run_end: RunEnded) -> bool:
        """Advance steady decodes in runs (decode_run.py) from now on; `on_run_end` hears each
        run's end. Outputs of a step then leave out the runs' members: a driver that turns this
        on delivers their tokens itself (simulate/engine_node.py). Not with a KV connector (it
        reads every scheduled chunk): returns whether runs are on."""
        if self.connector is not None:
            return False
        if self.runs is None:
            self.runs = DecodeRuns(self.kv, self.hasher, self.vocab_size, self.max_model_len)
            self.scheduler.runs = self.runs
        self.runs.on_run_end = on_run_end
        return True

    def keep_out_of_runs(self, request_id: str) -> None:
        """`request_id` never joins a decode run: every token of it comes in an output."""
        self.requests[request_id].runs_allowed = False

    def take_kv_events(self) -> list[KVEvent]:
        """Events not yet returned by a step (e.g. AllBlocksCleared of a reset while idle)."""
        events = self._pending_events + self.pool.take_events()
        self._pending_events = []
        if self.connector is not None:
            events.extend(self.connector.take_events())
        return events

    # ---- internals
    def _admission_cutoff_s(self, now_s: float) -> float:
        """Until when a new request must have been schedulable to join the step at `now_s`.

        With async scheduling (CostParams.cpu_overlap: vLLM's batch queue of two) the engine core
        plans step n + 1 as soon as step n is launched, so a step that follows its predecessor
        back to back holds only requests that had reached the scheduler when the predecessor
        started: one arriving during step n waits out step n and step n + 1. After an idle gap
        (or without async scheduling) the step is planned when it starts."""
        back_to_back = now_s - self._busy_until_s <= BACK_TO_BACK_S
        if self.cost.params.cpu_overlap and back_to_back:
            return self._last_now_s
        return now_s

    def _output_rate_at(self, time_s: float) -> float:
        """The output-rate average at `time_s`, the engine idle (no output) since its last step."""
        idle_s = time_s - self._output_rate_at_s
        if idle_s <= 0.0:
            return self.output_rate_tok_s
        return self.output_rate_tok_s * math.exp(-idle_s / OUTPUT_RATE_WINDOW_S)

    def _update_output_rate(self, num_tokens: int, start_s: float, duration_s: float) -> None:
        """Fold a step of `num_tokens` outputs over [start_s, start_s + duration_s] into the
        average, after the idle gap since the last step (if any) decayed it."""
        if duration_s <= 0.0:
            return
        rate = self._output_rate_at(start_s)
        weight = 1.0 - math.exp(-duration_s / OUTPUT_RATE_WINDOW_S)
        self.output_rate_tok_s = rate + weight * (num_tokens / duration_s - rate)
        self._output_rate_at_s = start_s + duration_s

    def _poll_connector(self, now_s: float) -> None:
        assert self.connector is not None  # called only with a connector
        poll = self.connector.poll(now_s)
        self.scheduler.finished_loading.update(poll.finished_loading)
        for request_id in poll.finished_storing:
            req = self.held.pop(request_id, None)
            if req is not None:
                self.kv.free(req)
        for request_id in poll.failed_loading:
            self._recompute_failed_load(request_id)

    def _recompute_failed_load(self, request_id: str) -> None:
        """A failed async load: drop its blocks; the request is looked up again from scratch."""
        req = self.requests.get(request_id)
        if req is None or req.status is not RequestStatus.WAITING_FOR_REMOTE_KVS:
            return
        self.kv.free(req)
        req.num_computed_tokens = 0
        req.num_external_computed_tokens = 0
        req.status = RequestStatus.WAITING

    def _postprocess(
        self, plan: StepPlan, now_s: float, num_implicit: int = 0
    ) -> list[RequestOutput]:
        """Sample the scheduled requests' tokens; `num_implicit` more were sampled for decode-run
        members (counted here; their tokens are materialized when their runs end)."""
        outputs: list[RequestOutput] = []
        finished_ids: list[str] = []  # in schedule order: the order vLLM frees them in
        runs = self.runs
        decoding: list[Request] = []  # sampled, not finished: may start decode runs
        vocab_size, max_model_len = self.vocab_size, self.max_model_len
        hasher = self.hasher
        # hasher.extend does nothing until a block is full: called only when one is
        hash_block_size = hasher.block_size
        for req, _ in plan.scheduled:
            all_token_ids = req.all_token_ids
            num_tokens = len(all_token_ids)
            if req.num_computed_tokens < num_tokens:
                continue  # a chunk of a longer prefill: no token yet
            num_prompt = len(req.prompt_token_ids)
            num_output = num_tokens - num_prompt
            if num_output == 0:
                self._record_prefill_done(req)
            token = generated_token_id(req.token_seed, num_output, vocab_size)
            all_token_ids.append(token)
            num_tokens += 1
            if hash_block_size and num_tokens >= (len(req.block_hashes) + 1) * hash_block_size:
                hasher.extend(all_token_ids, req.block_hashes, req.cache_salt)
            finished = num_output + 1 >= req.max_tokens or num_tokens >= max_model_len
            outputs.append(
                RequestOutput(
                    req.request_id,
                    [token],
                    finished,
                    FinishReason.LENGTH if finished else None,
                    num_prompt,
                    req.num_cached_tokens,
                    req.hits,
                    req.num_preemptions,
                )
            )
            if finished:
                req.finish_reason = FinishReason.LENGTH
                finished_ids.append(req.request_id)
            elif runs is not None:
                decoding.append(req)
        self.counters.generation_tokens += len(outputs) + num_implicit
        if runs is not None:
            for req in decoding:
                runs.try_join(req)
        if finished_ids:
            self.scheduler.remove_running(set(finished_ids))
            for request_id in finished_ids:
                req = self.requests.pop(request_id)
                assert req.finish_reason is not None  # set when the request finished
                reason = req.finish_reason.value
                self.counters.request_success[reason] = (
                    self.counters.request_success.get(reason, 0) + 1
                )
                self._release(req, now_s)
        return outputs

    def _record_prefill_done(self, req: Request) -> None:
        """vLLM counts prompt tokens (and their sources) once, when the first token is produced."""
        c = self.counters
        c.prompt_tokens += req.num_prompt_tokens
        cached = max(req.num_cached_tokens, 0)
        external = req.hits.cpu_tokens + req.hits.remote_tokens
        c.prompt_tokens_by_source["local_compute"] += req.num_prompt_tokens - cached
        c.prompt_tokens_by_source["local_cache_hit"] += cached - external
        c.prompt_tokens_by_source["external_kv_transfer"] += external

    def _release(self, req: Request, now_s: float) -> None:
        """Free a finished/aborted request's blocks, or hold them while the connector stores them."""
        req.status = RequestStatus.FINISHED
        # vLLM calls request_finished for every freed request, also one aborted while waiting with
        # no GPU blocks: the connector must drop its per-request state (e.g. LMCache lookup pins).
        if self.connector is not None:
            holds_blocks = self.connector.request_finished(req, self.kv.block_ids(req), now_s)
            if holds_blocks and self.kv.num_blocks(req):
                self.held[req.request_id] = req
                return
        self.kv.free(req)
