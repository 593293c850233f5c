"""vLLM's CPU offload managers: exact LRU and ARC orders, ref-count protection, store skipping."""

from kvbench.emulator.tiers.cpu_managers import (
    ARCOffloadingManager,
    LRUOffloadingManager,
    OffloadEvent,
)


def stored(manager, keys):
    out = manager.prepare_store(keys)
    manager.complete_store(out.keys_to_store)
    return out


def test_lru_filters_present_blocks_and_evicts_least_recent_first():
    lru = LRUOffloadingManager(3)
    stored(lru, [b"a", b"b", b"c"])
    lru.touch([b"a"])  # order now b, c, a
    out = lru.prepare_store([b"a", b"d", b"e"])
    assert out.keys_to_store == [b"d", b"e"]
    assert out.keys_evicted == [b"b", b"c"]
    assert list(lru.blocks) == [b"a", b"d", b"e"]
    assert lru.take_events() == [
        OffloadEvent([b"a", b"b", b"c"], removed=False),
        OffloadEvent([b"b", b"c"], removed=True),
    ]


def test_lru_touch_is_reversed_so_the_first_block_is_most_recent():
    lru = LRUOffloadingManager(4)
    stored(lru, [b"a", b"b", b"c", b"d"])
    lru.touch([b"b", b"c"])
    assert list(lru.blocks) == [b"a", b"d", b"c", b"b"]


def test_lru_never_evicts_blocks_being_stored_or_loaded():
    lru = LRUOffloadingManager(2)
    stored(lru, [b"a"])
    lru.prepare_store([b"b"])  # in flight: ref_cnt -1
    lru.prepare_load([b"a"])  # loading: ref_cnt 1
    assert lru.prepare_store([b"c"]) is None
    assert list(lru.blocks) == [b"a", b"b"]
    lru.complete_load([b"a"])
    assert lru.prepare_store([b"c"]).keys_evicted == [b"a"]


def test_lookup_counts_consecutive_ready_blocks_only():
    lru = LRUOffloadingManager(4)
    stored(lru, [b"a", b"b"])
    lru.prepare_store([b"c"])
    assert lru.lookup([b"a", b"b", b"c"]) == 2
    assert lru.lookup([b"x", b"a"]) == 0
    lru.complete_store([b"c"])
    assert lru.lookup([b"a", b"b", b"c"]) == 3


def test_arc_second_touch_promotes_to_t2_and_t1_is_evicted_first():
    arc = ARCOffloadingManager(3)
    stored(arc, [b"a", b"b", b"c"])
    arc.touch([b"a"])
    assert list(arc.t1) == [b"b", b"c"] and list(arc.t2) == [b"a"]
    out = arc.prepare_store([b"d"])  # |T1|=2 >= target 0: evict T1's LRU
    assert out.keys_evicted == [b"b"]
    assert list(arc.b1) == [b"b"]
    assert list(arc.t1) == [b"c", b"d"]


def test_arc_ghost_hit_in_b1_grows_t1_target_and_shifts_eviction_to_t2():
    arc = ARCOffloadingManager(3)
    stored(arc, [b"a", b"b", b"c"])
    arc.touch([b"a"])  # T2 = [a]
    stored(arc, [b"d"])  # evicts b into B1; T1 = [c, d]
    arc.touch([b"b"])  # ghost hit: target 0 -> 1
    assert arc.target_t1_size == 1.0
    arc.touch([b"c"])  # T1 = [d], T2 = [a, c]
    out = arc.prepare_store([b"e"])  # |T1| = 1 >= target 1: still T1
    assert out.keys_evicted == [b"d"]
    arc.touch([b"b"])  # B1 hit again: target 1 + max(1, 0/2) = 2
    assert arc.target_t1_size == 2.0
    arc.complete_store([b"e"])
    out = arc.prepare_store([b"f"])  # |T1| = 1 < target 2: evict T2's LRU
    assert out.keys_evicted == [b"a"]
    assert list(arc.b2) == [b"a"]


def test_arc_b2_hit_shrinks_target_and_store_removes_ghost():
    arc = ARCOffloadingManager(2)
    arc.target_t1_size = 2.0
    stored(arc, [b"a", b"b"])
    arc.touch([b"a"])  # T1 = [b], T2 = [a]
    stored(arc, [b"c"])  # |T1|=1 < 2: evict from T2 -> a goes to B2
    assert list(arc.b2) == [b"a"]
    arc.touch([b"a"])
    assert arc.target_t1_size == 1.0
    out = arc.prepare_store([b"a"])
    assert out.keys_to_store == [b"a"] and b"a" not in arc.b2 and list(arc.t1)[-1] == b"a"


def test_arc_touch_of_block_being_stored_does_not_promote():
    arc = ARCOffloadingManager(2)
    arc.prepare_store([b"a"])
    arc.touch([b"a"])
    assert list(arc.t1) == [b"a"] and not arc.t2
