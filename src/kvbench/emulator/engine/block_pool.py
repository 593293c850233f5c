"""GPU KV block pool with vLLM v1's prefix cache semantics (`v1/core/block_pool.py`,
`kv_cache_utils.FreeKVCacheBlockQueue`).

Invariants:
- Block 0 is the null block: taken out of the free queue at start and never freed or cached.
- The free queue is an O(1) doubly linked list, initially in block-id order. It is the eviction
  order: new blocks are popped from the head; freed blocks are appended at the tail (callers pass a
  request's blocks reversed, so a chain's tail is evicted before its head). With
  `free_uncached_first` (vLLM 0.32, see compat.py) freed blocks without a hash go to the head
  instead, in the given order, and are reused before any cached block is evicted.
- A free block may still hold a hash ("cached, unreferenced"): it keeps serving hits until it is
  popped for reuse; only then is its hash dropped and BlockRemoved emitted (lazy eviction).
- `touch` takes a cached free block off the queue and bumps its ref count.
- ref_cnt == 0 <=> the block is in the free queue (null block excepted).
- Usage = 1 - free / (num_gpu_blocks - 1): cached unreferenced blocks count as free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from kvbench.emulator.engine.hashing import to_event_hash
from kvbench.emulator.engine.interface import (
    AllBlocksCleared,
    BlockHash,
    BlockRemoved,
    BlockStored,
    KVEvent,
)


class KVBlock:
    __slots__ = (
        "block_id",
        "ref_cnt",
        "block_hash",
        "event_hash",
        "prev_free",
        "next_free",
        "is_null",
    )

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: bytes | None = None
        self.event_hash = 0  # to_event_hash(block_hash), kept while block_hash is set
        self.prev_free: KVBlock | None = None
        self.next_free: KVBlock | None = None
        self.is_null = False

    def __repr__(self) -> str:
        return (
            f"KVBlock(id={self.block_id}, ref={self.ref_cnt}, cached={self.block_hash is not None})"
        )


class FreeBlockQueue:
    """Doubly linked list through the blocks themselves; sentinel head/tail avoid branches.

    Blocks that were never used are not built up front: a run of fresh block ids
    [`_fresh_next`, `_fresh_end`) stands in the list as one marker node (`_fresh`), and its blocks
    are made (by `new_block`, in id order) when popping reaches it. Fresh blocks never come back
    to the queue as fresh (a freed block is a real node), so the run is contiguous and shrinks
    only from its front: the queue's order is exactly the one of a list built with every block.
    A pool of 64 engines x 25k blocks would otherwise build 1.6M blocks before its first step."""

    def __init__(
        self,
        blocks: Sequence[KVBlock] = (),
        fresh_ids: range = range(0),
        new_block: Callable[[int], KVBlock] = KVBlock,
    ) -> None:
        self.head = KVBlock(-1)
        self.tail = KVBlock(-1)
        self.head.next_free = self.tail
        self.tail.prev_free = self.head
        self.num_free_blocks = 0
        self.append_n(blocks)
        self._new_block = new_block
        self._fresh = KVBlock(-2)  # the marker of the fresh run, in the list while it is not empty
        self._fresh_next, self._fresh_end = fresh_ids.start, fresh_ids.stop
        if fresh_ids:
            assert fresh_ids.step == 1, "fresh block ids are consecutive"
            self.append(self._fresh)
            self.num_free_blocks += len(fresh_ids) - 1  # the marker counts as its blocks

    def popleft(self) -> KVBlock:
        return self.popleft_n(1)[0]

    def popleft_n(self, num_blocks: int) -> list[KVBlock]:
        """The first `num_blocks` free blocks, taken off the queue in order (as `num_blocks`
        poplefts, in one walk)."""
        if num_blocks > self.num_free_blocks:
            raise ValueError("no free blocks")
        blocks: list[KVBlock] = []
        append = blocks.append
        fresh = self._fresh
        block = self.head.next_free
        left = num_blocks
        while left:
            assert block is not None  # num_free_blocks free blocks precede the tail sentinel
            if block is fresh:
                take = min(left, self._fresh_end - self._fresh_next)
                blocks += map(self._new_block, range(self._fresh_next, self._fresh_next + take))
                self._fresh_next += take
                left -= take
                if self._fresh_next < self._fresh_end:
                    break  # the marker stays first
                nxt = block.next_free
                block.prev_free = block.next_free = None
                block = nxt
                continue
            append(block)
            nxt = block.next_free
            block.prev_free = block.next_free = None
            block = nxt
            left -= 1
        assert block is not None
        self.head.next_free = block
        block.prev_free = self.head
        self.num_free_blocks -= num_blocks
        return blocks

    def remove(self, block: KVBlock) -> None:
        prev, nxt = block.prev_free, block.next_free
        assert prev is not None and nxt is not None, "remove: the block is not in the free queue"
        prev.next_free = nxt
        nxt.prev_free = prev
        block.prev_free = block.next_free = None
        self.num_free_blocks -= 1

    def append(self, block: KVBlock) -> None:
        last = self.tail.prev_free
        assert last is not None  # the head sentinel at least
        last.next_free = block
        block.prev_free = last
        block.next_free = self.tail
        self.tail.prev_free = block
        self.num_free_blocks += 1

    def append_n(self, blocks: Iterable[KVBlock]) -> None:
        for block in blocks:
            self.append(block)

    def prepend_n(self, blocks: Sequence[KVBlock]) -> None:
        """Put `blocks` at the head in the given order (blocks[0] is popped next)."""
        head = self.head
        for block in reversed(blocks):
            first = head.next_free
            assert first is not None  # the tail sentinel at least
            block.prev_free = head
            block.next_free = first
            first.prev_free = block
            head.next_free = block
        self.num_free_blocks += len(blocks)

    def block_ids(self) -> list[int]:
        """Free block ids head (next evicted) to tail; for tests and debugging."""
        ids: list[int] = []
        block = self.head.next_free
        while block is not None and block is not self.tail:
            if block is self._fresh:
                ids += range(self._fresh_next, self._fresh_end)
            else:
                ids.append(block.block_id)
            block = block.next_free
        return ids


class BlockPool:
    def __init__(
        self,
        num_gpu_blocks: int,
        enable_caching: bool = True,
        block_size: int = 16,
        free_uncached_first: bool = False,
    ) -> None:
        """`free_uncached_first`: vLLM 0.32's free order (False: 0.11's, see compat.py)."""
        if num_gpu_blocks < 2:
            raise ValueError("num_gpu_blocks must be >= 2 (block 0 is the null block)")
        self.num_gpu_blocks = num_gpu_blocks
        self.enable_caching = enable_caching
        self.free_uncached_first = free_uncached_first
        self.block_size = block_size
        self.blocks: list[KVBlock] = []  # every block made so far, in id order (see FreeBlockQueue)
        self.free_queue = FreeBlockQueue(fresh_ids=range(num_gpu_blocks), new_block=self._new_block)
        self.null_block = self.free_queue.popleft()
        self.null_block.is_null = True
        # hash -> {block_id: block}: two requests computing the same block at once both cache it.
        self.cached: dict[bytes, dict[int, KVBlock]] = {}
        self.events: list[KVEvent] = []

    def _new_block(self, block_id: int) -> KVBlock:
        block = KVBlock(block_id)
        self.blocks.append(block)
        return block

    # ---- queries
    def num_free_blocks(self) -> int:
        return self.free_queue.num_free_blocks

    def usage(self) -> float:
        return 1.0 - self.free_queue.num_free_blocks / (self.num_gpu_blocks - 1)

    def get_cached_block(self, block_hash: bytes) -> KVBlock | None:
        holders = self.cached.get(block_hash)
        if not holders:
            return None
        return next(iter(holders.values()))

    # ---- allocation
    def get_new_blocks(self, num_blocks: int) -> list[KVBlock]:
        if num_blocks > self.free_queue.num_free_blocks:
            raise ValueError(f"cannot get {num_blocks} free blocks")
        blocks = self.free_queue.popleft_n(num_blocks)
        cached, events = self.cached, self.events
        for block in blocks:
            block_hash = block.block_hash
            if block_hash is not None:  # evict: the hash is dropped, BlockRemoved emitted
                holders = cached.get(block_hash)
                if holders is not None and holders.pop(block.block_id, None) is not None:
                    if not holders:
                        del cached[block_hash]
                    events.append(BlockRemoved(block_hashes=[block.event_hash], medium="GPU"))
                block.block_hash = None
            block.ref_cnt += 1
        return blocks

    def touch(self, blocks: Iterable[KVBlock]) -> None:
        for block in blocks:
            if block.ref_cnt == 0 and not block.is_null:
                self.free_queue.remove(block)
            block.ref_cnt += 1

    def free_blocks(self, ordered_blocks: Iterable[KVBlock]) -> None:
        """Drop one reference from each block; blocks reaching 0 go to the tail in the given order
        (vLLM 0.11), or, with `free_uncached_first`, only those holding a hash do (vLLM 0.32)."""
        if self.free_uncached_first:
            self._free_uncached_first(ordered_blocks)
            return
        append = self.free_queue.append
        for block in ordered_blocks:
            block.ref_cnt -= 1
            if block.ref_cnt == 0 and not block.is_null:
                append(block)

    def _free_uncached_first(self, ordered_blocks: Iterable[KVBlock]) -> None:
        """vLLM 0.32: blocks without a hash (or every block when caching is off) can never be hit,
        so they go to the head (reused first); cached ones to the tail, both in the given order."""
        reuse_first: list[KVBlock] = []
        evict_last: list[KVBlock] = []
        caching = self.enable_caching
        for block in ordered_blocks:
            block.ref_cnt -= 1
            if block.ref_cnt == 0 and not block.is_null:
                if block.block_hash is None or not caching:
                    reuse_first.append(block)
                else:
                    evict_last.append(block)
        if reuse_first:
            self.free_queue.prepend_n(reuse_first)
        if evict_last:
            self.free_queue.append_n(evict_last)

    # ---- caching
    def cache_full_blocks(
        self,
        blocks: Sequence[KVBlock],
        block_hashes: Sequence[bytes],
        all_token_ids: Sequence[int],
        num_cached_blocks: int,
        num_full_blocks: int,
    ) -> None:
        """Give blocks [num_cached_blocks, num_full_blocks) their hashes; one BlockStored per call."""
        if num_cached_blocks >= num_full_blocks:
            return
        new_hashes: list[BlockHash] = []
        cached = self.cached
        for i in range(num_cached_blocks, num_full_blocks):
            block, block_hash = blocks[i], block_hashes[i]
            if block.is_null:
                continue
            block.block_hash = block_hash
            block.event_hash = event_hash = to_event_hash(block_hash)
            holders = cached.get(block_hash)
            if holders is None:
                cached[block_hash] = {block.block_id: block}
            else:
                holders[block.block_id] = block
            new_hashes.append(event_hash)
        parent = (
            to_event_hash(block_hashes[num_cached_blocks - 1]) if num_cached_blocks > 0 else None
        )
        bs = self.block_size
        self.events.append(
            BlockStored(
                block_hashes=new_hashes,
                parent_block_hash=parent,
                token_ids=list(all_token_ids[num_cached_blocks * bs : num_full_blocks * bs]),
                block_size=bs,
                lora_id=None,
                medium="GPU",
            )
        )

    def reset_prefix_cache(self) -> bool:
        """vLLM refuses (returns False) while any block other than the null block is referenced."""
        num_used_blocks = self.num_gpu_blocks - self.free_queue.num_free_blocks
        if num_used_blocks != 1:
            return False
        self.cached.clear()
        for block in self.blocks:
            block.block_hash = None
        self.events.append(AllBlocksCleared())
        return True

    def take_events(self) -> list[KVEvent]:
        events, self.events = self.events, []
        return events
