"""KV cache manager: per-request block tables over the block pool (after vLLM v1
`v1/core/kv_cache_manager.py` + the full-attention `single_type_kv_cache_manager.py`).

Contracts (as vLLM):
- `get_computed_blocks(req)`: longest cached prefix, scanning at most (num_tokens-1)//block_size
  block hashes and stopping at the first miss (so a fully cached prompt recomputes its last
  block). Counts prefix-cache queries (num_tokens) and hits (hit tokens) on every call.
- `allocate_slots(req, num_new_tokens, num_new_computed_tokens, computed_blocks)`: returns the new
  blocks or None when the free queue cannot supply them (counting cached free blocks that a hit
  would take off the queue). On success it touches the hit blocks, appends new blocks, and caches
  every block that is full after this step (BlockStored), unless `delay_cache_blocks`.
- `free(req)`: releases a request's blocks in reverse order (tail evicted first).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvbench.emulator.engine.block_pool import BlockPool, KVBlock
from kvbench.emulator.engine.request import Request


@dataclass(slots=True)
class PrefixCacheStats:
    """Token counters of local prefix-cache lookups.

    `count_preempted_separately=True` follows vLLM >= 0.11.2 (`PrefixCacheStats.record`): lookups of
    a request with num_preemptions > 0 go to `preempted_*`, out of vllm:prefix_cache_*. False follows
    0.11.0, which counted them in the same counters.
    """

    count_preempted_separately: bool = True
    requests: int = 0
    queries: int = 0
    hits: int = 0
    preempted_requests: int = 0
    preempted_queries: int = 0
    preempted_hits: int = 0

    def record(self, num_tokens: int, num_hits: int, preempted: bool) -> None:
        if preempted and self.count_preempted_separately:
            self.preempted_requests += 1
            self.preempted_queries += num_tokens
            self.preempted_hits += num_hits
        else:
            self.requests += 1
            self.queries += num_tokens
            self.hits += num_hits


class KVCacheManager:
    def __init__(
        self,
        pool: BlockPool,
        block_size: int,
        max_model_len: int,
        enable_caching: bool = True,
        count_preempted_separately: bool = True,
        count_lookups_at_admission: bool = False,
    ) -> None:
        self.pool = pool
        self.count_lookups_at_admission = count_lookups_at_admission
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.enable_caching = enable_caching
        self.req_to_blocks: dict[str, list[KVBlock]] = {}
        self.num_cached_block: dict[str, int] = {}
        self.stats = PrefixCacheStats(count_preempted_separately)

    def get_computed_blocks(self, req: Request) -> tuple[list[KVBlock], int]:
        if not self.enable_caching:
            return [], 0
        max_num_blocks = (req.num_tokens - 1) // self.block_size
        hit_blocks: list[KVBlock] = []
        get_cached = self.pool.get_cached_block
        for block_hash in req.block_hashes[:max_num_blocks]:
            block = get_cached(block_hash)
            if block is None:
                break
            hit_blocks.append(block)
        num_hit_tokens = len(hit_blocks) * self.block_size
        if not self.count_lookups_at_admission:
            self.stats.record(req.num_tokens, num_hit_tokens, preempted=req.num_preemptions > 0)
        return hit_blocks, num_hit_tokens

    def record_admission(self, req: Request, num_hit_tokens: int) -> None:
        """The scheduler admitted `req` after a lookup that found `num_hit_tokens`: counted here
        when lookups are counted at admission (vLLM 0.32), else already in get_computed_blocks."""
        if self.count_lookups_at_admission and self.enable_caching:
            self.stats.record(req.num_tokens, num_hit_tokens, preempted=req.num_preemptions > 0)

    def num_blocks_to_allocate(
        self, req: Request, num_tokens: int, computed_blocks: list[KVBlock]
    ) -> int:
        have = len(self.req_to_blocks.get(req.request_id, ()))
        num_required = -(-num_tokens // self.block_size)
        num_new = max(num_required - len(computed_blocks) - have, 0)
        # Hit blocks sitting in the free queue leave it when touched: they cost a free slot too.
        num_evictable_hits = sum(1 for b in computed_blocks if b.ref_cnt == 0 and not b.is_null)
        return num_new + num_evictable_hits

    def allocate_slots(
        self,
        req: Request,
        num_new_tokens: int,
        num_new_computed_tokens: int = 0,
        computed_blocks: list[KVBlock] | None = None,
        delay_cache_blocks: bool = False,
    ) -> list[KVBlock] | None:
        num_computed_tokens = req.num_computed_tokens + num_new_computed_tokens
        num_tokens_need_slot = min(num_computed_tokens + num_new_tokens, self.max_model_len)
        req_blocks = self.req_to_blocks.get(req.request_id)
        if (
            not computed_blocks
            and req_blocks is not None
            and len(req_blocks) * self.block_size >= num_tokens_need_slot
        ):
            # fast path (most decode steps): the request's blocks already have room
            if self.enable_caching and not delay_cache_blocks:
                self.cache_blocks(req, min(num_computed_tokens + num_new_tokens, req.num_tokens))
            return []
        computed_blocks = computed_blocks or []
        if (
            self.num_blocks_to_allocate(req, num_tokens_need_slot, computed_blocks)
            > self.pool.num_free_blocks()
        ):
            return None
        if req_blocks is None:
            req_blocks = self.req_to_blocks[req.request_id] = []
            self.num_cached_block[req.request_id] = len(computed_blocks)
        if computed_blocks:
            self.pool.touch(computed_blocks)
            req_blocks.extend(computed_blocks)
        num_new_blocks = -(-num_tokens_need_slot // self.block_size) - len(req_blocks)
        new_blocks = self.pool.get_new_blocks(num_new_blocks) if num_new_blocks > 0 else []
        req_blocks.extend(new_blocks)
        if self.enable_caching and not delay_cache_blocks:
            self.cache_blocks(req, min(num_computed_tokens + num_new_tokens, req.num_tokens))
        return new_blocks

    def extend_in_place(self, req: Request) -> bool:
        """`allocate_slots(req, 1)`'s fast path for a decode (computed = tokens - 1, one new token):
        True when the request's blocks already have room for the token (then, as allocate_slots,
        the block it fills is cached); False when `allocate_slots` must run (new block, or none).
        Same effect as `allocate_slots(req, 1) == []` on that path, without its general checks."""
        request_id = req.request_id
        req_blocks = self.req_to_blocks.get(request_id)
        if req_blocks is None:
            return False
        num_tokens = len(req.all_token_ids)
        block_size, max_model_len = self.block_size, self.max_model_len
        # (conditional expressions for min(): this runs for every decode of every step)
        need_tokens = num_tokens if num_tokens < max_model_len else max_model_len
        if len(req_blocks) * block_size < need_tokens:
            return False
        if self.enable_caching:
            num_full = num_tokens // block_size
            num_hashed = len(req.block_hashes)
            if num_hashed < num_full:
                num_full = num_hashed
            if self.num_cached_block.get(request_id, 0) < num_full:
                self.cache_blocks(req, num_tokens)
        return True

    def cache_blocks(self, req: Request, num_tokens: int) -> None:
        """Cache the request's blocks that are full within its first `num_tokens` tokens."""
        num_cached = self.num_cached_block.get(req.request_id, 0)
        num_full = min(num_tokens // self.block_size, len(req.block_hashes))
        if num_cached >= num_full:
            return
        self.pool.cache_full_blocks(
            self.req_to_blocks[req.request_id],
            req.block_hashes,
            req.all_token_ids,
            num_cached,
            num_full,
        )
        self.num_cached_block[req.request_id] = num_full

    def free(self, req: Request) -> None:
        blocks = self.req_to_blocks.pop(req.request_id, None)
        self.num_cached_block.pop(req.request_id, None)
        if blocks:
            self.pool.free_blocks(reversed(blocks))

    def block_ids(self, req: Request) -> list[int]:
        return [b.block_id for b in self.req_to_blocks.get(req.request_id, ())]

    def num_blocks(self, req: Request) -> int:
        return len(self.req_to_blocks.get(req.request_id, ()))
