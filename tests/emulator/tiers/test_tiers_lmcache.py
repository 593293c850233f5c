"""LMCacheConnectorV1 with its local CPU tier, driven through the KVConnector protocol.

Facts: 1000 KV bytes/token, TP=2 (500 bytes/token/rank), 1 MB/s host link; chunk_size 8.
"""

import pytest
from tier_fakes import FakeRequest, chunk, facts

from kvbench.emulator.engine.interface import TierHits
from kvbench.emulator.tiers.lmcache import LMCacheConnector
from kvbench.emulator.tiers.lmcache_config import load_lmcache_config


def make(cpu_bytes=100_000, **extra):
    options = {"lmcache.chunk_size": 8, "lmcache.max_local_cpu_size": cpu_bytes / 1024**3}
    options.update({f"lmcache.{k}": v for k, v in extra.items()})
    return LMCacheConnector(load_lmcache_config({}, options), facts(), init_hash=123)


def request(request_id, tokens, num_prompt=None):
    return FakeRequest(
        request_id, list(tokens), num_prompt if num_prompt is not None else len(tokens)
    )


def prefill(conn, req, now_s=0.0):
    return conn.build_step([chunk(req, 0, req.num_prompt_tokens)], now_s)


def test_last_prefill_saves_the_partial_chunk_and_blocks_the_step():
    conn = make()
    step = prefill(conn, request("a", range(20)))
    assert step.stored_bytes == 20_000  # 3 chunks: 8 + 8 + 4 tokens, both ranks
    assert step.blocking_s == pytest.approx(0.01)  # 10000 bytes/rank over 1 MB/s
    metrics = conn.metrics()
    assert (
        metrics["lmcache:num_stored_tokens_total"] == 20
        and metrics["lmcache:local_cache_usage"] == 10_000
    )


def test_need_is_hit_minus_vllm_cached():
    conn = make()
    prefill(conn, request("a", range(20)))
    longer = request("b", list(range(20)) + [90, 91, 92, 93, 94])
    # the stored partial chunk [16,20) does not match [16,24): the hit is 16 tokens
    assert conn.get_num_new_matched_tokens(longer, 16, 1.0) == (0, False)
    assert conn.get_num_new_matched_tokens(longer, 0, 1.0) == (16, False)
    conn.update_state_after_alloc(longer, [], 16, 1.0)
    assert conn.external_hits("b") == TierHits(cpu_tokens=16)
    step = conn.build_step([chunk(longer, 16, 9)], 1.0)
    # retrieve of 16 tokens (8000 bytes/rank) + store of [16,24) and [24,25) (4500 bytes/rank)
    assert step.blocking_s == pytest.approx(0.008 + 0.0045)
    assert conn.metrics()["lmcache:num_hit_tokens_total"] == 16


def test_whole_prompt_hit_leaves_the_last_token_to_vllm():
    conn = make()
    prefill(conn, request("a", range(20)))
    same = request("c", range(20))
    assert conn.get_num_new_matched_tokens(same, 16, 1.0) == (3, False)  # 20 - 1 - 16


def test_chunked_prefill_saves_full_chunks_then_the_rest_on_the_last_step():
    conn = make()
    req = request("a", range(20))
    assert conn.build_step([chunk(req, 0, 10)], 0.0).stored_bytes == 8_000
    assert conn.build_step([chunk(req, 10, 10)], 0.1).stored_bytes == 12_000
    assert conn.metrics()["lmcache:num_store_requests_total"] == 2


def test_decode_is_saved_only_with_save_decode_cache():
    for save_decode, expected in ((False, 0), (True, 8_000)):
        conn = make(save_decode_cache=save_decode)
        req = request("a", range(24), num_prompt=17)
        prefill(conn, req)
        assert conn.build_step([chunk(req, 23, 1)], 1.0).stored_bytes == expected


def test_already_saved_chunks_are_skipped():
    conn = make()
    prefill(conn, request("a", range(16)))
    assert prefill(conn, request("b", list(range(16)) + [7] * 8)).stored_bytes == 8_000


def test_cpu_lru_evicts_unpinned_chunks_and_lookup_pins():
    conn = make(cpu_bytes=12_000)  # three 8-token chunks per rank
    prefill(conn, request("a", range(24)))
    first = request("b", list(range(8)) + [5] * 8)
    assert conn.get_num_new_matched_tokens(first, 0, 1.0) == (8, False)  # pins chunk 0 of a
    prefill(conn, request("c", range(100, 116)), 1.0)  # two chunks: evict a's chunks 1 and 2, not 0
    assert conn.get_num_new_matched_tokens(request("d", range(24)), 0, 2.0) == (8, False)
    assert conn.metrics()["kvbench:lmcache_cpu_evicted_chunks_total"] == 2


def test_reset_clears_the_cpu_tier():
    conn = make()
    prefill(conn, request("a", range(16)))
    conn.reset()
    assert conn.get_num_new_matched_tokens(request("b", range(17)), 0, 1.0) == (0, False)


def test_calibrated_copy_rate_and_per_chunk_and_per_request_work_hold_the_step():
    """CostParams.lmcache_*: LMCache's own copy rate replaces the host link's; each chunk moved and
    each request scheduled adds its CPU work to the step's wait."""
    calibrated = facts(
        lmcache_copy_bytes_per_s=2e6,
        lmcache_chunk_overhead_s=0.001,
        lmcache_per_request_overhead_s=0.0005,
    )
    options = {"lmcache.chunk_size": 8, "lmcache.max_local_cpu_size": 100_000 / 1024**3}
    conn = LMCacheConnector(load_lmcache_config({}, options), calibrated, init_hash=123)
    step = prefill(conn, request("a", range(20)))
    # 10000 bytes/rank at 2 MB/s, 3 chunks saved, 1 request in the step
    assert step.blocking_s == pytest.approx(0.005 + 0.003 + 0.0005)
    longer = request("b", list(range(20)) + [90, 91, 92, 93, 94])
    assert conn.get_num_new_matched_tokens(longer, 0, 1.0) == (16, False)
    conn.update_state_after_alloc(longer, [], 16, 1.0)
    step = conn.build_step([chunk(longer, 16, 9)], 1.0)
    # load: 16 tokens (8000 bytes/rank) in 2 chunks; store: [16,24) and [24,25) (4500 bytes/rank)
    assert step.blocking_s == pytest.approx(0.004 + 0.002 + 0.00225 + 0.002 + 0.0005)
