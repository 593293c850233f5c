"""Prefix caching with vLLM v1's observable semantics, in the style of vLLM's
tests/v1/core/test_prefix_caching.py: block size 16, 11 GPU blocks (block 0 is the null block)."""

from __future__ import annotations

from engine_testlib import make_engine, make_request

from kvbench.emulator.engine.block_pool import BlockPool
from kvbench.emulator.engine.hashing import to_event_hash
from kvbench.emulator.engine.interface import AllBlocksCleared, BlockRemoved, BlockStored

COMMON = [i for i in range(3) for _ in range(16)]  # 3 full blocks shared by requests


def free_ids(engine) -> list[int]:
    return engine.pool.free_queue.block_ids()


def test_null_block_and_initial_free_order():
    pool = BlockPool(11)
    assert pool.null_block.block_id == 0
    assert pool.free_queue.block_ids() == list(range(1, 11))
    assert pool.usage() == 0.0


def test_prefill_hits_shared_prefix_and_frees_tail_first():
    engine = make_engine()
    engine.add_request(make_request("r0", COMMON + [3] * 7))  # 55 tokens -> blocks 1..4
    engine.add_request(make_request("r1", COMMON + [5] * 5))  # 53 tokens -> hits 1..3, new 5
    result = engine.step(0.0)

    # r0's blocks are cached at allocation, so r1 (same step) hits its 3 full blocks.
    by_id = {o.request_id: o for o in result.outputs}
    assert by_id["r0"].num_cached_tokens == 0
    assert by_id["r1"].num_cached_tokens == 48
    assert by_id["r1"].hits.gpu_tokens == 48
    assert result.num_scheduled_tokens == 55 + 5
    # Both finished (max_tokens=1): r0 freed [4,3,2,1] (only 4 reaches 0), then r1 [5,3,2,1].
    assert free_ids(engine) == [6, 7, 8, 9, 10, 4, 5, 3, 2, 1]
    stats = engine.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (55 + 53, 48)
    assert stats.kv_cache_usage_perc == 0.0  # cached but unreferenced blocks count as free


def test_lazy_eviction_emits_block_removed_on_reuse_and_hit_stops_at_first_miss():
    engine = make_engine()
    engine.add_request(make_request("r0", COMMON + [3] * 7))
    engine.add_request(make_request("r1", COMMON + [5] * 5))
    first = engine.step(0.0)
    stored_hashes = [
        h for e in first.kv_events if isinstance(e, BlockStored) for h in e.block_hashes
    ]
    assert len(stored_hashes) == 3  # r1's hit blocks are not stored again
    third_block_hash = stored_hashes[2]

    # 8 blocks needed: pops 6,7,8,9,10,4,5 (never cached) and 3 (cached: evicted now).
    engine.add_request(make_request("r2", [7] * 120))
    second = engine.step(1.0)
    removed = [e for e in second.kv_events if isinstance(e, BlockRemoved)]
    assert [e.block_hashes for e in removed] == [[third_block_hash]]
    assert removed[0].medium == "GPU"
    # r2 held [6, 7, 8, 9, 10, 4, 5, 3] and, finished, freed them in reverse behind the cached 2, 1.
    assert free_ids(engine) == [2, 1, 3, 5, 4, 10, 9, 8, 7, 6]

    # r3 shares the 3 common blocks but block 3 is gone: the hit stops at the first miss.
    engine.add_request(make_request("r3", COMMON + [9] * 3))
    third = engine.step(2.0)
    r3 = [o for o in third.outputs if o.request_id == "r3"][0]
    assert r3.num_cached_tokens == 32


def test_fully_cached_prompt_recomputes_its_last_block():
    engine = make_engine()
    prompt = list(range(32))  # exactly 2 blocks
    engine.add_request(make_request("a", prompt))
    engine.step(0.0)
    engine.add_request(make_request("b", prompt))
    result = engine.step(1.0)
    assert result.outputs[0].num_cached_tokens == 16  # (32 - 1) // 16 blocks at most
    assert result.num_scheduled_tokens == 16


def test_touch_takes_cached_free_blocks_off_the_queue_and_usage_counts_referenced_only():
    engine = make_engine()
    engine.add_request(make_request("a", COMMON + [3], max_tokens=1))  # blocks 1..4
    engine.step(0.0)
    assert free_ids(engine) == [5, 6, 7, 8, 9, 10, 4, 3, 2, 1]
    engine.add_request(make_request("b", COMMON + [4], max_tokens=2))
    engine.step(1.0)
    # b touched 1,2,3 (off the queue) and took 5 for its last token.
    assert engine.kv.block_ids(engine.requests["b"]) == [1, 2, 3, 5]
    assert free_ids(engine) == [6, 7, 8, 9, 10, 4]
    assert engine.stats().kv_cache_usage_perc == 1 - 6 / 10


def test_decode_filled_block_is_cached_with_its_parent():
    engine = make_engine()
    engine.add_request(make_request("a", list(range(15)), max_tokens=3))
    first = engine.step(0.0)  # 15 prompt tokens: no full block; 1 token generated -> 16 tokens
    assert not [e for e in first.kv_events if isinstance(e, BlockStored)]
    second = engine.step(0.1)  # the step that computes token 16 caches block 0 of the request
    stored = [e for e in second.kv_events if isinstance(e, BlockStored)]
    generated = first.outputs[0].new_token_ids
    assert len(stored) == 1 and stored[0].token_ids == list(range(15)) + generated
    assert stored[0].parent_block_hash is None
    assert stored[0].block_hashes == [to_event_hash(engine.requests["a"].block_hashes[0])]


def test_reset_prefix_cache_refuses_while_blocks_are_in_use():
    engine = make_engine()
    engine.add_request(make_request("a", COMMON, max_tokens=2))
    engine.step(0.0)
    assert engine.reset_prefix_cache() is False
    engine.step(0.1)  # finishes
    assert engine.reset_prefix_cache() is True
    assert [type(e) for e in engine.take_kv_events()] == [AllBlocksCleared]
    engine.add_request(make_request("b", COMMON))
    result = engine.step(1.0)
    assert result.outputs[0].num_cached_tokens == 0


def test_cache_salt_separates_identical_prompts():
    engine = make_engine()
    engine.add_request(make_request("a", COMMON, cache_salt="tenant-1"))
    engine.step(0.0)
    engine.add_request(make_request("b", COMMON, cache_salt="tenant-2"))
    engine.add_request(make_request("c", COMMON, cache_salt="tenant-1"))
    result = engine.step(1.0)
    cached = {o.request_id: o.num_cached_tokens for o in result.outputs}
    assert cached == {"b": 0, "c": 32}


def test_duplicate_hash_is_cached_twice_and_evicted_per_block():
    pool = BlockPool(11, block_size=4)
    first, second = pool.get_new_blocks(2)  # blocks 1 and 2 compute the same content
    tokens, digest = [1, 2, 3, 4], bytes(32)
    pool.cache_full_blocks([first], [digest], tokens, 0, 1)
    pool.cache_full_blocks([second], [digest], tokens, 0, 1)
    assert [type(e) for e in pool.take_events()] == [BlockStored, BlockStored]
    assert pool.get_cached_block(digest) is first
    pool.free_blocks([first, second])
    pool.get_new_blocks(9)  # pops 3..10 then 1: block 1 loses the hash, block 2 keeps serving it
    assert [e.block_hashes for e in pool.take_events()] == [[to_event_hash(digest)]]
    assert pool.get_cached_block(digest) is second
