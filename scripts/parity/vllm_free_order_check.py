"""Ground truth for tests/parity/test_parity_free_order_repro.py, from vLLM 0.32's own BlockPool.

    .venv-vllm/bin/python scripts/parity/vllm_free_order_check.py

Replays the repro's block operations (what KVCacheManager does for sequential max_tokens=1 requests:
allocate, cache the full blocks, free in reverse) on `vllm.v1.core.block_pool.BlockPool` and prints
the free queue, the evictions and the final hit, so the expectations in the repro are vLLM's, not
ours. Exits 1 if they differ from the repro's expectations.
"""

from __future__ import annotations

import sys

from vllm.v1.core.block_pool import BlockPool
from vllm.v1.core.kv_cache_utils import BlockHash

BLOCK_SIZE = 8


class _Req:
    """The few attributes BlockPool.cache_full_blocks reads from a request."""

    def __init__(self, tokens: list[int]) -> None:
        self.all_token_ids = tokens
        # Any hash unique per block content works here (the chain itself is checked elsewhere).
        self.block_hashes = [
            BlockHash(bytes(str(tokens[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE]), "ascii"))
            for i in range(len(tokens) // BLOCK_SIZE)
        ]
        self.lora_request = None
        self.mm_features = []
        self.cache_salt = None
        self.session_id = None
        self.prompt_embeds = None


def queue_ids(pool: BlockPool) -> list[int]:
    return [b.block_id for b in pool.free_block_queue.get_all_free_blocks()]


def run(pool: BlockPool, tokens: list[int], num_hit_blocks: int = 0) -> list:
    req = _Req(tokens)
    hit = []
    for h in req.block_hashes[: (len(tokens) - 1) // BLOCK_SIZE]:
        cached = pool.get_cached_block(h, [0])
        if cached is None:
            break
        hit.append(cached[0])
    pool.touch(hit)
    new = pool.get_new_blocks(-(-len(tokens) // BLOCK_SIZE) - len(hit))
    blocks = hit + new
    pool.cache_full_blocks(req, blocks, len(hit), len(tokens) // BLOCK_SIZE, BLOCK_SIZE, 0)
    pool.free_blocks(reversed(blocks))
    return hit


def main() -> int:
    pool = BlockPool(
        6, enable_caching=True, hash_block_size=BLOCK_SIZE, enable_kv_cache_events=True
    )
    a = list(range(100, 112))
    run(pool, a)
    after_a = queue_ids(pool)
    run(pool, list(range(200, 220)))
    pool.take_events()
    run(pool, list(range(300, 312)))
    removed_by_c = [e for e in pool.take_events() if type(e).__name__ == "BlockRemoved"]
    hit_d = run(pool, a)
    print(
        f"free queue after A: {after_a}\nBlockRemoved during C: {len(removed_by_c)}\n"
        f"D hit tokens: {len(hit_d) * BLOCK_SIZE}"
    )
    ok = after_a == [2, 3, 4, 5, 1] and not removed_by_c and len(hit_d) * BLOCK_SIZE == 8
    print("matches the repro's expectations" if ok else "DIFFERS from the repro's expectations")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
