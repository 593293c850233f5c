"""CPU block managers of vLLM's native offload (v1/kv_offload: lru_manager.py, arc_manager.py).

Contract (as vLLM's OffloadingManager):
- A block is keyed by an offload-block hash (bytes). `ref_cnt == -1` means "being stored, not
  ready": lookups do not see it and it cannot be evicted. `ref_cnt == 0` is ready and evictable;
  `ref_cnt > 0` is being loaded (pinned).
- `lookup` counts consecutive ready blocks from the start of the given list.
- `prepare_store` drops hashes already present, evicts unreferenced ready blocks to make room and
  returns None (nothing changed) when it cannot.
- `complete_store` makes blocks ready; events are recorded as (hashes, removed) pairs, stored on
  completion and removed on eviction, and handed out by `take_events`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BlockKey = bytes


@dataclass(slots=True)
class BlockStatus:
    block_id: int
    ref_cnt: int = -1  # -1: store in flight

    @property
    def is_ready(self) -> bool:
        return self.ref_cnt >= 0


@dataclass(frozen=True, slots=True)
class PrepareStoreOutput:
    keys_to_store: list[BlockKey]
    block_ids: list[int]  # CPU block ids, parallel to keys_to_store
    keys_evicted: list[BlockKey]


@dataclass(frozen=True, slots=True)
class OffloadEvent:
    keys: list[BlockKey]
    removed: bool


@dataclass(slots=True)
class CPUBlockAllocator:
    """Fixed-size CPU block-id allocator with a free list (vLLM's CPUBackend)."""

    num_blocks: int
    _next_unused_id: int = 0
    _free_ids: list[int] = field(default_factory=list)

    def num_free(self) -> int:
        return self.num_blocks - self._next_unused_id + len(self._free_ids)

    def allocate(self, count: int) -> list[int]:
        assert count <= self.num_free(), "allocate() beyond capacity"
        ids: list[int] = []
        while self._free_ids and len(ids) < count:
            ids.append(self._free_ids.pop())
        while len(ids) < count:
            ids.append(self._next_unused_id)
            self._next_unused_id += 1
        return ids

    def free(self, block_id: int) -> None:
        self._free_ids.append(block_id)


class _ManagerBase:
    """Shared bookkeeping: allocator, event list, lookup/load/store-completion over `_find`."""

    def __init__(self, num_blocks: int) -> None:
        self.allocator = CPUBlockAllocator(num_blocks)
        self._events: list[OffloadEvent] = []

    def _find(self, key: BlockKey) -> BlockStatus | None:
        raise NotImplementedError

    def lookup(self, keys: Iterable[BlockKey]) -> int:
        hits = 0
        for key in keys:
            block = self._find(key)
            if block is None or not block.is_ready:
                break
            hits += 1
        return hits

    def prepare_load(self, keys: Sequence[BlockKey]) -> list[int]:
        block_ids = []
        for key in keys:
            block = self._find(key)
            assert block is not None and block.is_ready, "prepare_load of a block that is not ready"
            block.ref_cnt += 1
            block_ids.append(block.block_id)
        return block_ids

    def complete_load(self, keys: Sequence[BlockKey]) -> None:
        for key in keys:
            block = self._find(key)
            assert block is not None and block.ref_cnt > 0, (
                "complete_load of a block not being loaded"
            )
            block.ref_cnt -= 1

    def complete_store(self, keys: Sequence[BlockKey]) -> None:
        stored = []
        for key in keys:
            block = self._find(key)
            if block is not None and not block.is_ready:
                block.ref_cnt = 0
                stored.append(key)
        if stored:
            self._events.append(OffloadEvent(stored, removed=False))

    def take_events(self) -> list[OffloadEvent]:
        events, self._events = self._events, []
        return events

    def clear_unreferenced(self) -> list[BlockKey]:
        raise NotImplementedError

    def clear(self) -> list[BlockKey]:
        """Drop every ready, unreferenced block (reset_prefix_cache); records one removed event."""
        removed = self.clear_unreferenced()
        if removed:
            self._events.append(OffloadEvent(removed, removed=True))
        return removed

    def num_used_blocks(self) -> int:
        return self.allocator.num_blocks - self.allocator.num_free()


class LRUOffloadingManager(_ManagerBase):
    """One OrderedDict, least recently used first."""

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self.blocks: OrderedDict[BlockKey, BlockStatus] = OrderedDict()

    def _find(self, key: BlockKey) -> BlockStatus | None:
        return self.blocks.get(key)

    def touch(self, keys: Sequence[BlockKey]) -> None:
        # Reversed, so the first block of a request ends up most recently used.
        for key in reversed(list(keys)):
            if key in self.blocks:
                self.blocks.move_to_end(key)

    def prepare_store(self, keys: Sequence[BlockKey]) -> PrepareStoreOutput | None:
        to_store = [key for key in keys if key not in self.blocks]
        num_to_evict = len(to_store) - self.allocator.num_free()
        evicted: list[BlockKey] = []
        if num_to_evict > 0:
            for key, block in self.blocks.items():
                if block.ref_cnt == 0:
                    evicted.append(key)
                    if len(evicted) == num_to_evict:
                        break
            else:
                return None  # not enough unreferenced blocks: nothing is changed
        for key in evicted:
            self.allocator.free(self.blocks.pop(key).block_id)
        if evicted:
            self._events.append(OffloadEvent(evicted, removed=True))
        block_ids = self.allocator.allocate(len(to_store))
        for key, block_id in zip(to_store, block_ids):
            self.blocks[key] = BlockStatus(block_id)
        return PrepareStoreOutput(to_store, block_ids, evicted)

    def clear_unreferenced(self) -> list[BlockKey]:
        removed = [key for key, block in self.blocks.items() if block.ref_cnt == 0]
        for key in removed:
            self.allocator.free(self.blocks.pop(key).block_id)
        return removed


class ARCOffloadingManager(_ManagerBase):
    """Adaptive replacement (vLLM 0.11.2 arc_manager.py).

    T1 holds blocks seen once (recent), T2 blocks touched again (frequent); B1/B2 are ghost lists of
    keys evicted from T1/T2, each bounded by the capacity. A touch of a ready T1 block promotes it to
    T2; a touch of a ghost adapts `target_t1_size` (B1 hit: grow T1's target by
    max(1, |B2|/|B1|); B2 hit: shrink by max(1, |B1|/|B2|)). Eviction takes the LRU unreferenced
    block of T1 when |T1| >= target, else of T2, falling back to the other list; it fails (None)
    when neither has an unreferenced block.
    """

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self.capacity = num_blocks
        self.target_t1_size = 0.0
        self.t1: OrderedDict[BlockKey, BlockStatus] = OrderedDict()
        self.t2: OrderedDict[BlockKey, BlockStatus] = OrderedDict()
        self.b1: OrderedDict[BlockKey, None] = OrderedDict()
        self.b2: OrderedDict[BlockKey, None] = OrderedDict()

    def _find(self, key: BlockKey) -> BlockStatus | None:
        return self.t1.get(key) or self.t2.get(key)

    def touch(self, keys: Sequence[BlockKey]) -> None:
        for key in reversed(list(keys)):
            if key in self.t1:
                block = self.t1.pop(key)
                if block.is_ready:
                    self.t2[key] = block
                else:  # prepared for store in this step: not a second use
                    self.t1[key] = block
            elif key in self.t2:
                self.t2.move_to_end(key)
            elif key in self.b1:
                delta = max(1.0, len(self.b2) / len(self.b1))
                self.target_t1_size = min(self.target_t1_size + delta, float(self.capacity))
                self.b1.move_to_end(key)
            elif key in self.b2:
                delta = max(1.0, len(self.b1) / len(self.b2))
                self.target_t1_size = max(self.target_t1_size - delta, 0.0)
                self.b2.move_to_end(key)

    def _pick_victim(self, exclude: set[BlockKey]) -> tuple[str, BlockKey] | None:
        order = ("t1", "t2") if len(self.t1) >= int(self.target_t1_size) else ("t2", "t1")
        for name in order:
            for key, block in getattr(self, name).items():
                if block.ref_cnt == 0 and key not in exclude:
                    return name, key
        return None

    def prepare_store(self, keys: Sequence[BlockKey]) -> PrepareStoreOutput | None:
        to_store = [key for key in keys if self._find(key) is None]
        num_to_evict = len(to_store) - self.allocator.num_free()
        victims: list[tuple[str, BlockKey]] = []
        chosen: set[BlockKey] = set()
        while len(victims) < max(0, num_to_evict):
            victim = self._pick_victim(chosen)
            if victim is None:
                return None  # nothing changed
            victims.append(victim)
            chosen.add(victim[1])
        for name, key in victims:
            self.allocator.free(getattr(self, name).pop(key).block_id)
            ghost = self.b1 if name == "t1" else self.b2
            ghost[key] = None
            while len(ghost) > self.capacity:
                ghost.popitem(last=False)
        evicted = [key for _, key in victims]
        if evicted:
            self._events.append(OffloadEvent(evicted, removed=True))
        block_ids = self.allocator.allocate(len(to_store))
        for key, block_id in zip(to_store, block_ids):
            self.b1.pop(key, None)
            self.b2.pop(key, None)
            self.t1[key] = BlockStatus(block_id)
        return PrepareStoreOutput(to_store, block_ids, evicted)

    def clear_unreferenced(self) -> list[BlockKey]:
        removed = []
        for table in (self.t1, self.t2):
            for key in [k for k, b in table.items() if b.ref_cnt == 0]:
                self.allocator.free(table.pop(key).block_id)
                removed.append(key)
        self.b1.clear()
        self.b2.clear()
        return removed


def make_manager(policy: str, num_blocks: int) -> LRUOffloadingManager | ARCOffloadingManager:
    if policy == "lru":
        return LRUOffloadingManager(num_blocks)
    if policy == "arc":
        return ARCOffloadingManager(num_blocks)
    raise ValueError(policy)
