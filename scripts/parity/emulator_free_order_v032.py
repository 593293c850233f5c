"""`kvbench emulate serve` with vLLM 0.32's free order patched into the block pool (parity dev aid).

    .venv/bin/python scripts/parity/emulator_free_order_v032.py MODEL [vllm serve flags]

vLLM 0.32 `BlockPool.free_blocks` puts freed blocks without a hash at the *head* of the free queue
(reused first) and cached ones at the tail; the emulator (like vLLM 0.11) appends both to the tail.
This wrapper swaps in the 0.32 rule at runtime, without editing the engine, so the parity run can
show what remains once that one divergence is gone (run_parity.py --emulator-variant
free-order-v032). The same change as a patch for the engine: engine-free-order-v032.patch.
"""

from __future__ import annotations

import sys
from typing import Iterable, Sequence

from kvbench.emulator.api import serve
from kvbench.emulator.engine.block_pool import BlockPool, FreeBlockQueue, KVBlock


def prepend_n(queue: FreeBlockQueue, blocks: Sequence[KVBlock]) -> None:
    """Put `blocks` at the head in the given order (blocks[0] is popped next)."""
    for block in reversed(blocks):
        first = queue.head.next_free
        block.prev_free, block.next_free = queue.head, first
        first.prev_free = block
        queue.head.next_free = block
        queue.num_free_blocks += 1


def free_blocks_v032(pool: BlockPool, ordered_blocks: Iterable[KVBlock]) -> None:
    reuse_first: list[KVBlock] = []
    evict_last: list[KVBlock] = []
    for block in ordered_blocks:
        block.ref_cnt -= 1
        if block.ref_cnt == 0 and not block.is_null:
            cached = block.block_hash is not None and pool.enable_caching
            (evict_last if cached else reuse_first).append(block)
    prepend_n(pool.free_queue, reuse_first)
    pool.free_queue.append_n(evict_last)


if __name__ == "__main__":
    BlockPool.free_blocks = free_blocks_v032  # this process only
    sys.exit(serve.main(sys.argv[1:]))
