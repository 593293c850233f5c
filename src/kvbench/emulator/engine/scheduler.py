"""Continuous-batching scheduler after vLLM v1 (`v1/core/sched/scheduler.py`), FCFS.

The scheduling invariant (as vLLM's): there are no prefill or decode phases. Each request has
`num_computed_tokens` and `num_tokens`; every step gives requests tokens so that computed catches up
with total, within a token budget (`max_num_batched_tokens`, chunked prefill) and at most
`max_num_seqs` running requests. Running requests are served first (in order), then waiting ones.
When a running request cannot get blocks, the *last* running request is preempted (recompute: its
blocks are freed, computed tokens reset to 0, and it goes to the front of the waiting queue); no
waiting request is admitted in a step that preempted. Checked every step by `_check_invariants`:
  sum(scheduled tokens) <= budget; len(running) <= max_num_seqs;
  every running request's blocks cover its computed tokens.

Connector hook order follows vLLM: local GPU hit -> connector.get_num_new_matched_tokens ->
allocate_slots -> update_state_after_alloc; async loads park the request in
WAITING_FOR_REMOTE_KVS until `poll` lists it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from kvbench.emulator.engine.connector import KVConnector, ScheduledChunk
from kvbench.emulator.engine.decode_run import DecodeRuns
from kvbench.emulator.engine.kv_manager import KVCacheManager, PrefixCacheStats
from kvbench.emulator.engine.request import Request, RequestStatus


@dataclass(slots=True)
class StepWork:
    """What the model runs in one step, in the aggregates the cost model needs."""

    num_reqs: int = 0
    num_tokens: int = 0  # new tokens through the linear layers
    num_sampled: int = 0  # requests that reach their end this step and sample a token (lm_head)
    attended_pairs: int = 0  # sum over new tokens of the context each attends to (causal)
    kv_tokens_read: int = 0  # context tokens whose K,V the attention reads
    num_kv_tokens_written: int = 0
    num_prefill_starts: int = 0  # requests whose first prompt chunk runs in this step
    num_prefill_start_tokens: int = 0  # ... their prompt tokens (cached ones included)


@dataclass(slots=True)
class StepPlan:
    """The scheduler's decision for one step."""

    scheduled: list[tuple[Request, int]] = field(default_factory=list)  # (request, new tokens)
    preempted: list[Request] = field(default_factory=list)
    work: StepWork = field(default_factory=StepWork)
    token_budget: int = 0


@dataclass(slots=True)
class SchedulerLimits:
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    block_size: int


class Scheduler:
    def __init__(
        self,
        limits: SchedulerLimits,
        kv: KVCacheManager,
        connector: KVConnector | None = None,
        check_invariants: bool = True,
    ) -> None:
        self.limits = limits
        self.kv = kv
        self.connector = connector
        self.check_invariants = check_invariants
        self.runs: DecodeRuns | None = None  # decode runs, when the engine turned them on
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.finished_loading: set[str] = set()
        self.num_preemptions = 0
        self._num_started = 0  # requests that went running: the running list is in this order
        # external (connector) hits: recorded when a request goes running, as vLLM >= 0.11.2
        self.external_stats = PrefixCacheStats(kv.stats.count_preempted_separately)
        # vllm:prompt_tokens_cached_by_source (0.32): hit tokens by tier, counted at admission
        self.cached_tokens_by_source = {"device": 0, "host": 0, "external_unspecified": 0}

    # ---- one step
    def schedule(self, now_s: float, admit_by_s: float | None = None) -> StepPlan:
        """Plan the step that starts at `now_s`. New requests join only if they were schedulable
        by `admit_by_s` (default `now_s`): with async scheduling the step was planned while the
        previous one ran, before anything that arrived since reached the scheduler."""
        plan = StepPlan(token_budget=self.limits.max_num_batched_tokens)
        budget = self._schedule_running(plan, now_s)
        if not plan.preempted:
            cutoff_s = now_s if admit_by_s is None else admit_by_s
            budget = self._schedule_waiting(plan, budget, now_s, cutoff_s)
        for req, num_new in plan.scheduled:
            req.num_computed_tokens += num_new
        if self.check_invariants:
            self._check_invariants(plan, budget)
        return plan

    def _schedule_running(self, plan: StepPlan, now_s: float) -> int:
        """Running requests first, in order. Members of decode runs (decode_run.py) take one
        token each without being visited when the budget gives every one of them its token in
        the general path too; else every run ends and each request is planned here."""
        runs = self.runs
        if runs is None or not runs.members:
            return self._schedule_listed(plan, self.running, plan.token_budget)
        num_members = runs.num_members
        explicit = self._explicit_if_members_fit(plan.token_budget - num_members)
        if explicit is None:
            runs.end_all()
            return self._schedule_listed(plan, self.running, plan.token_budget)
        budget = self._schedule_listed(plan, explicit, plan.token_budget - num_members)
        # members preempted for an earlier request's blocks left their runs, unscheduled
        self._add_decodes(plan.work, runs.num_members, runs.kv_tokens(runs.step_index))
        return budget + num_members - runs.num_members

    def _explicit_if_members_fit(self, budget: int) -> list[Request] | None:
        """The running requests outside decode runs, in order, if planning the running list in
        order within `budget` + the members' tokens gives every member its token; else None.

        Planned with `budget` (the members' tokens set aside), a request before the last member
        gets all its tokens when the demands of those before the last member fit `budget` (then
        the general path gives it all its tokens too, and every member finds budget left); one
        after the last member sees what it sees in the general path: the budget less the tokens
        of all before it."""
        max_model_len = self.limits.max_model_len
        explicit: list[Request] = []
        demand = demand_before_last_member = 0
        for req in self.running:
            if req.run_join >= 0:
                demand_before_last_member = demand
                continue
            explicit.append(req)
            computed = req.num_computed_tokens
            wanted = min(len(req.all_token_ids) - computed, max_model_len - 1 - computed)
            if wanted > 0:
                demand += wanted
        return explicit if demand_before_last_member <= budget else None

    def _schedule_listed(self, plan: StepPlan, requests: list[Request], budget: int) -> int:
        """Plan `requests` (running ones, in running order) within `budget`. `requests` is the
        running list itself or a copy of part of it: a request preempted meanwhile (popped off
        the running list's tail) is then still listed, and skipped."""
        max_model_len = self.limits.max_model_len
        extend_in_place = self.kv.extend_in_place
        scheduled = plan.scheduled
        running_status = RequestStatus.RUNNING
        num_decodes = decode_kv_tokens = 0  # decodes' work terms, added once (see _add_decodes)
        for req in requests:
            if budget <= 0:
                break
            if req.status is not running_status:
                continue  # preempted in this step (only a copy of the running list holds it)
            computed = req.num_computed_tokens
            num_tokens = len(req.all_token_ids)
            remaining = num_tokens - computed
            # with budget > 0, min(remaining, budget, max_model_len - 1 - computed) is 1 here
            if remaining == 1 and computed < max_model_len - 1 and extend_in_place(req):
                # a decode whose blocks have room (nothing to evict): _add_scheduled(plan, req, 1)
                scheduled.append((req, 1))
                num_decodes += 1
                decode_kv_tokens += computed + 1
                if num_tokens == len(req.prompt_token_ids) and (
                    computed <= req.num_cached_tokens or computed <= 0
                ):  # computed <= max(cached, 0): a prompt whose last token is all it runs
                    plan.work.num_prefill_starts += 1
                    plan.work.num_prefill_start_tokens += num_tokens
                budget -= 1
                continue
            num_new = min(remaining, budget, max_model_len - 1 - computed)
            if num_new <= 0:
                continue
            if self._allocate_running(req, num_new, plan):
                self._add_scheduled(plan, req, num_new)
            else:
                break  # `req` itself was preempted
            budget -= num_new
        self._add_decodes(plan.work, num_decodes, decode_kv_tokens)
        return budget

    def _allocate_running(self, req: Request, num_new: int, plan: StepPlan) -> bool:
        """Allocate for a running request, preempting from the tail until it fits or is itself evicted."""
        while self.kv.allocate_slots(req, num_new) is None:
            victim = self.running.pop()
            self._preempt(victim, plan)
            if victim is req:
                return False
        return True

    def _preempt(self, req: Request, plan: StepPlan) -> None:
        if req.run_join >= 0 and self.runs is not None:
            self.runs.leave(req)  # materialized through the step before this one
        self.kv.free(req)
        req.status = RequestStatus.PREEMPTED
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)
        plan.preempted.append(req)

    def _schedule_waiting(
        self, plan: StepPlan, budget: int, now_s: float, admit_by_s: float
    ) -> int:
        skipped: list[Request] = []
        while self.waiting and budget > 0 and len(self.running) < self.limits.max_num_seqs:
            req = self.waiting[0]
            if (
                req.num_preemptions == 0
                and req.status is RequestStatus.WAITING
                and req.schedulable_s > admit_by_s
            ):
                break  # still in the API server / on its way to the engine core (FCFS: all later too)
            if req.status is RequestStatus.WAITING_FOR_REMOTE_KVS and not self._finish_remote_load(
                req
            ):
                skipped.append(self.waiting.popleft())
                continue
            admitted = self._admit(req, budget, plan, now_s)
            if admitted is None:
                break  # could not allocate: stays first in line, looked up (and counted) again next step
            self.waiting.popleft()
            if admitted < 0:
                req.status = RequestStatus.WAITING_FOR_REMOTE_KVS
                skipped.append(req)
                continue
            self._start_running(req)
            self._add_scheduled(plan, req, admitted)
            budget -= admitted
        self.waiting.extendleft(reversed(skipped))
        return budget

    def _admit(self, req: Request, budget: int, plan: StepPlan, now_s: float) -> int | None:
        """Look up hits and allocate. Returns tokens to schedule, -1 for an async load, None if no room."""
        num_external, load_async = 0, False
        computed_blocks: list = []
        num_local = 0
        did_lookup = (
            req.num_computed_tokens == 0
        )  # a fresh (or preempted) request, not a loaded one
        if did_lookup:
            computed_blocks, num_local = self.kv.get_computed_blocks(req)
            if self.connector is not None:
                num_external, load_async = self.connector.get_num_new_matched_tokens(
                    req, num_local, now_s
                )
                # at least the last prompt token is computed here (vLLM's connectors promise this)
                num_external = max(min(num_external, req.num_tokens - 1 - num_local), 0)
            req.num_external_computed_tokens = num_external
            if req.num_cached_tokens < 0:
                req.hits.gpu_tokens = num_local
        num_computed = req.num_computed_tokens + num_local + num_external
        num_new = 0 if load_async else min(req.num_tokens - num_computed, budget)
        new_blocks = self.kv.allocate_slots(
            req, num_new + num_external, num_local, computed_blocks, delay_cache_blocks=load_async
        )
        if new_blocks is None:
            return None  # not admitted: a 0.11 lookup was counted anyway, a 0.32 one is not
        if did_lookup:
            self.kv.record_admission(req, num_local)
        if self.connector is not None:
            self.connector.update_state_after_alloc(
                req, self.kv.block_ids(req), num_external, now_s
            )
        if load_async:
            return -1  # computed tokens are set when the load finishes (_finish_remote_load)
        req.num_computed_tokens = num_computed
        return num_new

    def _finish_remote_load(self, req: Request) -> bool:
        """vLLM `_update_waiting_for_remote_kv`: once loaded, the blocks count as computed and cached."""
        if req.request_id not in self.finished_loading:
            return False
        self.finished_loading.discard(req.request_id)
        num_computed = min(self.kv.num_blocks(req) * self.limits.block_size, req.num_tokens)
        if num_computed == req.num_tokens:
            num_computed -= 1  # the last token is always recomputed to produce logits
        self.kv.cache_blocks(req, num_computed)
        req.num_computed_tokens = num_computed
        req.status = RequestStatus.WAITING
        return True

    def _start_running(self, req: Request) -> None:
        if self.connector is not None:
            self.external_stats.record(
                req.num_tokens, req.num_external_computed_tokens, preempted=req.num_preemptions > 0
            )
        if req.num_cached_tokens < 0:
            req.num_cached_tokens = req.num_computed_tokens
            self._record_tier_hits(req)
        req.status = RequestStatus.RUNNING
        req.running_seq = self._num_started
        self._num_started += 1
        self.running.append(req)

    def _record_tier_hits(self, req: Request) -> None:
        """Split the request's cached tokens into gpu / cpu / remote, summing to num_cached_tokens."""
        hits = req.hits
        hits.gpu_tokens = min(hits.gpu_tokens, req.num_cached_tokens)
        external_tokens = req.num_cached_tokens - hits.gpu_tokens
        if self.connector is not None and external_tokens > 0:
            split = self.connector.external_hits(req.request_id)
            hits.remote_tokens = min(split.remote_tokens, external_tokens)
            hits.cpu_tokens = external_tokens - hits.remote_tokens
        by_source = self.cached_tokens_by_source
        by_source["device"] += hits.gpu_tokens
        by_source["host"] += hits.cpu_tokens
        by_source["external_unspecified"] += hits.remote_tokens

    def _add_scheduled(self, plan: StepPlan, req: Request, num_new: int) -> None:
        plan.scheduled.append((req, num_new))
        work = plan.work
        context = req.num_computed_tokens
        if req.num_output_tokens == 0 and context - max(req.num_cached_tokens, 0) <= 0:
            work.num_prefill_starts += 1
            work.num_prefill_start_tokens += req.num_prompt_tokens
        work.num_reqs += 1
        work.num_tokens += num_new
        work.attended_pairs += num_new * context + num_new * (num_new + 1) // 2
        work.kv_tokens_read += context + num_new
        work.num_kv_tokens_written += num_new
        if context + num_new >= req.num_tokens:
            work.num_sampled += 1

    @staticmethod
    def _add_decodes(work: StepWork, num_decodes: int, kv_tokens: int) -> None:
        """The work terms `_add_scheduled(plan, req, 1)` adds, summed over `num_decodes` requests
        whose one new token is their last one (computed = tokens - 1, so each samples), with
        `kv_tokens` the sum of their computed + 1. Integer sums: the order of adding is free."""
        work.num_reqs += num_decodes
        work.num_tokens += num_decodes
        work.attended_pairs += kv_tokens  # 1 * context + 1 * 2 // 2 each
        work.kv_tokens_read += kv_tokens
        work.num_kv_tokens_written += num_decodes
        work.num_sampled += num_decodes

    # ---- connector plumbing
    def connector_chunks(self, plan: StepPlan) -> list[ScheduledChunk]:
        """Chunks for `connector.build_step`, after `schedule` advanced num_computed_tokens."""
        return [
            ScheduledChunk(req, req.num_computed_tokens - num_new, num_new)
            for req, num_new in plan.scheduled
        ]

    # ---- removal
    def remove_running(self, finished_ids: set[str]) -> None:
        self.running = [r for r in self.running if r.request_id not in finished_ids]

    def remove_waiting(self, req: Request) -> None:
        self.waiting.remove(req)

    def _check_invariants(self, plan: StepPlan, budget_left: int) -> None:
        assert budget_left >= 0 and plan.work.num_tokens <= plan.token_budget, (
            "token budget exceeded"
        )
        assert len(self.running) <= self.limits.max_num_seqs, (
            "more running requests than max_num_seqs"
        )
        block_size = self.limits.block_size
        blocks = self.kv.req_to_blocks  # kv.num_blocks(req), read directly: it runs every step
        for req in self.running:
            if req.run_join >= 0:
                continue  # a decode run's member: its blocks cover its whole run (checked at join)
            covered = len(blocks.get(req.request_id, ())) * block_size
            assert covered >= req.num_computed_tokens, f"{req} blocks cover only {covered} tokens"
