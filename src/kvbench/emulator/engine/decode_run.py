"""Decode runs: requests in steady decode advanced per event instead of per step (opt-in; the
simulated target's engines turn it on, engine.enable_decode_runs).

In most steps a decoding request gets exactly one token and nothing else happens to it: its last
block has room (no allocation), no block fills up (nothing to cache), it does not finish. The
general step path still plans, samples and delivers that token for it, request by request. A
request in a *run* is left out of that work for the steps of the run: its token ids, computed
tokens and block hashes are materialized when the run ends, with the values the general path
would have given them step by step.

Contract:
- A run covers the engine steps [join, due): `due` is the first step at which the general path
  does more than the one token (a full block to cache, a new block to allocate, the request's
  last token), computed from the request's state when it joins; at `due` the run ends before the
  step is planned and the general path plans the request's step (as every step outside a run).
- A run also ends early, materialized through the latest planned step before the event: when the
  scheduler cannot give every running request its tokens within the step's budget (every run
  ends, the step is planned the general way), when the request is preempted or aborted.
- Every member is scheduled in every step of its run: one decode token, counted in the step's
  work (`num_members`, `kv_tokens(step)`: the sum of the members' computed + 1, as
  `Scheduler._add_decodes` takes it) and in its sampled tokens (`members_in_last_step`).
- `on_run_end(request, join, last)` hears every run that ended, its tokens materialized through
  step `last` (last < join: the run ended before its first step).
Only an engine without a KV connector uses runs (a connector reads every scheduled chunk).
"""

from __future__ import annotations

from collections.abc import Callable

from kvbench.emulator.engine.hashing import BlockHasher
from kvbench.emulator.engine.kv_manager import KVCacheManager
from kvbench.emulator.engine.request import Request, RequestStatus, generated_token_id

RunEnded = Callable[[Request, int, int], None]


class DecodeRuns:
    def __init__(
        self, kv: KVCacheManager, hasher: BlockHasher, vocab_size: int, max_model_len: int
    ) -> None:
        self.kv = kv
        self.hasher = hasher
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.step_index = -1  # the step being planned (within engine.step), else the latest one
        self.members: dict[str, Request] = {}
        self._due: dict[int, list[Request]] = {}  # step -> members whose run ends before it
        # sum over members of (tokens at join - join): their kv tokens at step s sum to this + n*s
        self._kv_base = 0
        self.members_in_last_step = 0  # members scheduled in the latest step, less those aborted
        self.on_run_end: RunEnded | None = None

    @property
    def num_members(self) -> int:
        return len(self.members)

    def kv_tokens(self, step: int) -> int:
        """Sum over members of their computed + 1 tokens when step `step` is planned."""
        return self._kv_base + len(self.members) * step

    # ---- the step's edges
    def begin_step(self) -> int:
        """Start planning the next step: the runs due at it end (materialized through the step
        before). Returns the step's index."""
        self.step_index += 1
        step = self.step_index
        for req in self._due.pop(step, ()):
            self._end(req, step - 1, from_due=True)
        return step

    def end_all(self) -> None:
        """Every run ends before the step being planned (the general path plans it)."""
        for req in list(self.members.values()):
            self.leave(req)

    def leave(self, req: Request) -> None:
        """End `req`'s run while step `step_index` is planned (before its token there)."""
        self._end(req, self.step_index - 1, from_due=False)

    def leave_between_steps(self, req: Request) -> None:
        """End `req`'s run between steps (an abort): materialized through the latest step."""
        if req.run_join <= self.step_index:
            self.members_in_last_step -= 1
        self._end(req, self.step_index, from_due=False)

    # ---- joining
    def try_join(self, req: Request) -> None:
        """After the step `step_index` gave `req` a token (not its last): start a run from the
        next step when at least one step would do nothing but the one token."""
        num_tokens = len(req.all_token_ids)
        request_id = req.request_id
        block_size = self.kv.block_size
        blocks = self.kv.req_to_blocks.get(request_id)
        if (
            blocks is None
            or not req.runs_allowed
            or req.status is not RequestStatus.RUNNING
            or req.num_computed_tokens != num_tokens - 1
        ):
            return
        # step step_index + j plans the request with num_tokens + j - 1 tokens and samples its
        # (num_tokens + j - num_prompt)-th output token
        j_last = min(
            req.max_tokens + len(req.prompt_token_ids) - num_tokens,
            self.max_model_len - num_tokens,
        )
        j_alloc = len(blocks) * block_size - num_tokens + 2  # the first token past its blocks
        j_cache = j_alloc  # caching off: nothing is ever cached
        if self.kv.enable_caching:  # the next block to fill (extend_in_place caches it)
            num_cached = self.kv.num_cached_block.get(request_id, 0)
            j_cache = (num_cached + 1) * block_size - num_tokens + 1
        j_due = min(j_last, j_alloc, j_cache)
        if j_due < 2:
            return  # its next step is not a plain decode token
        # the scheduler's invariant for every step of the run (it skips members): the blocks
        # cover the computed tokens after the run's last step, num_tokens - 2 + j_due
        assert len(blocks) * block_size >= num_tokens - 2 + j_due, f"{req}: blocks too few"
        join = self.step_index + 1
        req.run_join = join
        req.run_due = join - 1 + j_due
        self.members[request_id] = req
        self._due.setdefault(req.run_due, []).append(req)
        self._kv_base += num_tokens - join

    # ---- internals
    def _end(self, req: Request, last: int, from_due: bool) -> None:
        join = req.run_join
        del self.members[req.request_id]
        if not from_due:
            self._due[req.run_due].remove(req)
        self._kv_base -= len(req.all_token_ids) - join
        self._materialize(req, last - join + 1)
        req.run_join = -1
        if self.on_run_end is not None:
            self.on_run_end(req, join, last)

    def _materialize(self, req: Request, num_steps: int) -> None:
        """The tokens the general path would have sampled in `num_steps` decode steps."""
        if num_steps <= 0:
            return
        all_token_ids = req.all_token_ids
        seed, vocab_size = req.token_seed, self.vocab_size
        first = len(all_token_ids) - len(req.prompt_token_ids)
        all_token_ids += [
            generated_token_id(seed, index, vocab_size) for index in range(first, first + num_steps)
        ]
        req.num_computed_tokens += num_steps
        self.hasher.extend(all_token_ids, req.block_hashes, req.cache_salt)
