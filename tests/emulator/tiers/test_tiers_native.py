"""OffloadingConnector driven through the KVConnector protocol with tiny fake requests.

Facts: GPU block 16 tokens, 1000 KV bytes/token, TP=2 (500 bytes/token/rank), 1 MB/s host link,
offload block 32 tokens (2 GPU blocks, keyed by the hash of the second).
"""

import pytest
from tier_fakes import chunk, facts, hashed_request

from kvbench.emulator.engine.interface import BlockRemoved, BlockStored, TierHits
from kvbench.emulator.tiers.native import OffloadingConnector
from kvbench.emulator.tiers.native_config import parse_offload_config
from kvbench.errors import UserError


def make(num_cpu_blocks=8, block_size=32, policy="lru"):
    extra = {"num_cpu_blocks": num_cpu_blocks, "block_size": block_size, "eviction_policy": policy}
    return OffloadingConnector(parse_offload_config(extra, facts()), facts())


def test_config_block_size_must_be_a_multiple_of_the_gpu_block():
    with pytest.raises(UserError, match="block_size: 40 is not a multiple"):
        parse_offload_config({"num_cpu_blocks": 4, "block_size": 40}, facts())


def test_config_cpu_bytes_to_use_is_a_total_over_ranks():
    config = parse_offload_config({"cpu_bytes_to_use": 100_000, "block_size": 32}, facts())
    assert config.num_cpu_blocks == 3  # 100000 // (32 tokens x 1000 bytes)
    assert config.block_size_factor == 2


@pytest.mark.parametrize(
    "extra, key",
    [
        ({}, "exactly one of num_cpu_blocks"),
        ({"num_cpu_blocks": 4, "cpu_bytes_to_use": 10**9}, "exactly one of"),
        ({"num_cpu_blocks": 4, "eviction_policy": "fifo"}, "eviction_policy"),
        ({"num_cpu_blocks": -1}, "num_cpu_blocks"),
    ],
)
def test_config_errors_name_the_key(extra, key):
    with pytest.raises(UserError, match=key):
        parse_offload_config(extra, facts())


def test_write_through_store_keys_last_gpu_block_and_holds_blocks_until_stored():
    conn = make()
    req = hashed_request("r1", ["g0", "g1", "g2", "g3", "g4"])  # 80 tokens: 2 full offload blocks
    step = conn.build_step([chunk(req, 0, 80)], now_s=0.0)
    assert step.stored_bytes == 64_000 and step.blocking_s == 0.0
    assert conn.request_finished(req, [], now_s=0.01) is True
    assert conn.poll(0.031).finished_storing == []  # 32000 bytes/rank at 1 MB/s = 0.032 s
    assert conn.poll(0.032).finished_storing == ["r1"]
    assert conn.take_events() == [BlockStored([b"g1", b"g3"], None, [], 32, None, "CPU")]
    metrics = conn.metrics()
    assert metrics["vllm:kv_offload_total_bytes_total|transfer_type=GPU_to_CPU"] == 64_000
    assert metrics["vllm:kv_offload_total_time_total|transfer_type=GPU_to_CPU"] == pytest.approx(
        0.032
    )
    assert metrics["kvbench:cpu_kv_cache_usage_perc|tier=cpu"] == 2 / 8


def test_load_only_the_continuation_beyond_the_gpu_hit_and_wait_for_it():
    conn = make()
    conn.build_step([chunk(hashed_request("r1", ["g0", "g1", "g2", "g3"]), 0, 64)], 0.0)
    conn.poll(1.0)
    req = hashed_request("r2", ["g0", "g1", "g2", "g3", "x4"])
    assert conn.get_num_new_matched_tokens(req, 16, now_s=1.0) == (48, True)
    conn.update_state_after_alloc(req, [1, 2, 3, 4, 5], 48, now_s=1.0)
    assert conn.external_hits("r2") == TierHits(cpu_tokens=48)
    assert conn.poll(1.023).finished_loading == []  # 24000 bytes/rank -> 0.024 s
    assert conn.poll(1.024).finished_loading == ["r2"]
    assert conn.metrics()["vllm:kv_offload_total_bytes_total|transfer_type=CPU_to_GPU"] == 48_000


def test_less_than_one_offload_block_is_not_loaded():
    conn = make()
    conn.build_step([chunk(hashed_request("r1", ["g0", "g1", "g2", "g3"]), 0, 64)], 0.0)
    conn.poll(1.0)
    req = hashed_request("r2", ["g0", "g1", "g2", "g3"])
    assert conn.get_num_new_matched_tokens(req, 48, 1.0) == (0, False)  # only 16 tokens left
    assert conn.get_num_new_matched_tokens(req, 0, 1.0) == (64, True)
    other = hashed_request("r3", ["y0", "y1"])
    assert conn.get_num_new_matched_tokens(other, 0, 1.0) == (0, False)


def test_blocks_being_stored_are_not_visible_to_lookup():
    conn = make()
    conn.build_step([chunk(hashed_request("r1", ["g0", "g1"]), 0, 32)], 0.0)
    req = hashed_request("r2", ["g0", "g1", "x2"])
    assert conn.get_num_new_matched_tokens(req, 0, 0.001) == (0, False)
    conn.poll(0.016)
    assert conn.get_num_new_matched_tokens(req, 0, 0.016) == (32, True)


def test_stores_queue_on_the_link_and_decode_blocks_are_stored():
    conn = make()
    a = hashed_request("a", ["a0", "a1"])
    b = hashed_request("b", ["b0", "b1", "b2", "b3"])
    conn.build_step([chunk(a, 0, 32), chunk(b, 0, 47)], 0.0)  # b: 47 tokens -> 1 full offload block
    assert conn.poll(0.016).finished_storing == []
    conn.request_finished(b, [], 0.016)
    assert conn.poll(0.031).finished_storing == []  # b's store queued behind a's: ends at 0.032
    assert conn.poll(0.032).finished_storing == ["b"]
    # decode: b computed 63 tokens, schedules its 64th -> second offload block (b3) is now full
    conn.build_step([chunk(b, 63, 1)], 1.0)
    conn.poll(2.0)
    assert [e.block_hashes for e in conn.take_events()] == [[b"a1"], [b"b1"], [b"b3"]]


def test_store_skipped_when_no_room_then_retried_next_step():
    conn = make(num_cpu_blocks=2)
    first = hashed_request("r1", ["g0", "g1", "g2", "g3"])
    second = hashed_request("r2", ["h0", "h1"])
    conn.build_step([chunk(first, 0, 64), chunk(second, 0, 32)], 0.0)  # r1's 2 blocks fill the CPU
    metrics = conn.metrics()
    assert metrics["kvbench:kv_offload_store_skipped_blocks_total|tier=cpu"] == 1
    conn.poll(1.0)
    conn.build_step(
        [chunk(second, 32, 1)], 1.0
    )  # retried: evicts r1's LRU block (g3 touched first)
    conn.poll(2.0)
    events = conn.take_events()
    assert events[1] == BlockRemoved([b"g3"], "CPU")
    assert events[2] == BlockStored([b"h1"], None, [], 32, None, "CPU")


def test_reset_drops_ready_blocks_only():
    conn = make()
    conn.build_step([chunk(hashed_request("r1", ["g0", "g1"]), 0, 32)], 0.0)
    conn.poll(1.0)
    conn.build_step([chunk(hashed_request("r2", ["h0", "h1"]), 0, 32)], 1.0)
    conn.take_events()
    conn.reset()
    assert conn.take_events() == [BlockRemoved([b"g1"], "CPU")]
    assert conn.metrics()["kvbench:cpu_kv_cache_used_blocks|tier=cpu"] == 1
