"""LMCache's remote tier against real Redis and Valkey servers (fixtures start them on free ports).

Facts: 1000 KV bytes/token, TP=2; chunk_size 8; payload scale 1/100 -> 40 bytes per 8-token chunk
per rank; 50 ms socket timeout; breaker retry after 1 s of engine time.
"""

import pytest
import redis
from tier_fakes import FakeRequest, chunk, facts

from kvbench.emulator.engine.interface import TierHits
from kvbench.emulator.tiers.lmcache import LMCacheConnector
from kvbench.emulator.tiers.lmcache_config import load_lmcache_config
from kvbench.emulator.tiers.remote_store import RemoteKVStore, unpack_metadata


def make(server, **extra):
    options = {
        "lmcache.chunk_size": 8,
        "lmcache.remote_url": server.url,
        "kvbench.remote_payload_scale": 0.01,
    }
    options.update(extra)
    config = load_lmcache_config({}, options)
    remote = RemoteKVStore(
        config.remote_url, config.remote_timeout_ms / 1000, config.remote_retry_interval_s
    )
    return LMCacheConnector(config, facts(), init_hash=123, remote=remote, num_layers=2)


def request(request_id, tokens):
    return FakeRequest(request_id, list(tokens), len(tokens))


def store(conn, req, now_s=0.0):
    conn.build_step([chunk(req, 0, req.num_prompt_tokens)], now_s)


def test_keys_and_layout_on_the_real_server(kv_store_server):
    conn = make(kv_store_server)
    store(conn, request("a", range(12)))  # chunks [0,8) and [8,12), 2 ranks each
    client = redis.Redis.from_url(kv_store_server.redis_url)
    sep = ":" if kv_store_server.kind == "valkey" else ""
    chunks = conn.token_db.chunks(list(range(12)))
    expected = set()
    for c in chunks:
        for rank in (0, 1):
            key = f"vllm@Qwen/Qwen3-8B@2@{rank}@{c.chunk_hash:x}@bfloat16"
            expected |= {f"{key}{sep}kv_bytes".encode(), f"{key}{sep}metadata".encode()}
    assert set(client.keys("*")) == expected
    key0 = f"vllm@Qwen/Qwen3-8B@2@0@{chunks[1].chunk_hash:x}@bfloat16"
    assert len(client.get(f"{key0}{sep}kv_bytes")) == 20  # 4 tokens x 500 bytes x 0.01
    # length, fmt KV_2LTD, dtype bfloat16, shape [2, layers, tokens, hidden per rank]
    assert unpack_metadata(client.get(f"{key0}{sep}metadata")) == (20, 1, 3, (2, 2, 4, 62))
    metrics = conn.metrics()
    assert metrics["kvbench:lmcache_remote_payload_scale"] == 0.01
    assert metrics["lmcache:num_remote_write_bytes_total"] == 12_000


def test_remote_hit_after_cpu_is_cleared_is_loaded_and_written_back(kv_store_server):
    conn = make(kv_store_server)
    store(conn, request("a", range(16)))
    conn.reset()  # local CPU tier emptied; the store keeps the chunks
    req = request("b", list(range(16)) + [1, 2, 3])
    assert conn.get_num_new_matched_tokens(req, 0, 1.0) == (16, False)
    conn.update_state_after_alloc(req, [], 16, 1.0)
    assert conn.external_hits("b") == TierHits(remote_tokens=16)
    assert conn.build_step([], 1.0).blocking_s > 16_000 / 12.5e9  # round trip + network + host link
    # written back to CPU: the next lookup is served by the CPU tier
    again = request("c", list(range(16)) + [9])
    assert conn.get_num_new_matched_tokens(again, 0, 2.0) == (16, False)
    conn.update_state_after_alloc(again, [], 16, 2.0)
    assert conn.external_hits("c") == TierHits(cpu_tokens=16)


def test_mixed_cpu_then_remote_prefix(kv_store_server):
    conn = make(
        kv_store_server, **{"lmcache.max_local_cpu_size": 8_000 / 1024**3}
    )  # two chunks/rank
    store(conn, request("a", range(24)))  # chunk 0 evicted from CPU by chunk 2, all three remote
    req = request("b", list(range(24)) + [5])
    # chunk 0 misses on CPU, so the remote tier answers from chunk 0 on
    assert conn.get_num_new_matched_tokens(req, 8, 1.0) == (16, False)
    conn.update_state_after_alloc(req, [], 16, 1.0)
    assert conn.external_hits("b") == TierHits(remote_tokens=16)


def test_a_missing_rank_key_is_a_miss(kv_store_server):
    conn = make(kv_store_server, **{"lmcache.local_cpu": False})
    store(conn, request("a", range(16)))
    client = redis.Redis.from_url(kv_store_server.redis_url)
    second = conn.token_db.chunks(list(range(16)))[1]
    sep = ":" if kv_store_server.kind == "valkey" else ""
    client.delete(f"vllm@Qwen/Qwen3-8B@2@1@{second.chunk_hash:x}@bfloat16{sep}metadata")
    assert conn.get_num_new_matched_tokens(request("b", range(17)), 0, 1.0) == (8, False)


def test_stopped_store_means_misses_errors_and_backoff_then_hits_resume(redis_server):
    conn = make(redis_server, **{"lmcache.local_cpu": False})
    req = request("b", range(17))
    redis_server.stop()
    assert conn.get_num_new_matched_tokens(req, 0, 10.0) == (0, False)
    assert conn.metrics()["kvbench:lmcache_remote_errors_total|op=lookup"] == 1
    store(conn, request("a", range(16)), 10.5)  # breaker open: dropped without a try
    assert conn.get_num_new_matched_tokens(req, 0, 10.9) == (0, False)
    metrics = conn.metrics()
    assert metrics["kvbench:lmcache_remote_errors_total|op=lookup"] == 1
    assert metrics["kvbench:lmcache_remote_errors_total|op=put"] == 0
    assert metrics["kvbench:lmcache_remote_available"] == 0.0
    redis_server.start()  # same port, empty (no persistence)
    store(conn, request("a2", range(16)), 11.0)  # a new request: "a" counts as saved
    assert conn.get_num_new_matched_tokens(req, 0, 11.1) == (16, False)
    assert conn.metrics()["kvbench:lmcache_remote_available"] == 1.0


def test_frozen_store_times_out_then_recovers(kv_store_server):
    conn = make(kv_store_server, **{"lmcache.local_cpu": False})
    store(conn, request("a", range(16)))
    req = request("b", range(17))
    kv_store_server.pause()
    try:
        assert conn.get_num_new_matched_tokens(req, 0, 5.0) == (0, False)
        assert conn.metrics()["kvbench:lmcache_remote_errors_total|op=lookup"] == 1
    finally:
        kv_store_server.resume()
    assert conn.get_num_new_matched_tokens(req, 0, 5.5) == (0, False)  # still backing off
    assert conn.get_num_new_matched_tokens(req, 0, 6.0) == (16, False)


def test_the_remote_write_holds_the_step_for_its_round_trip_and_the_true_bytes(kv_store_server):
    """12 tokens x 1000 bytes = 12,000 true bytes: at 1 MB/s of network and 2 MB/s of calibrated
    store path (CostParams.lmcache_remote_bytes_per_s) that is 12 ms + 6 ms, plus the measured
    round trip; the CPU copy adds 6,000 bytes/rank over the 1 MB/s host link. LMCache's valkey://
    connector spreads the batch's two chunks (8 + 4 tokens) over two of its worker streams."""
    options = {
        "lmcache.chunk_size": 8,
        "lmcache.remote_url": kv_store_server.url,
        "kvbench.remote_payload_scale": 0.01,
        "kvbench.remote_network_bytes_per_s": 1e6,
    }
    config = load_lmcache_config({}, options)
    remote = RemoteKVStore(config.remote_url, 1.0, config.remote_retry_interval_s)
    conn = LMCacheConnector(
        config, facts(lmcache_remote_bytes_per_s=2e6), init_hash=123, remote=remote, num_layers=2
    )
    step = conn.build_step([chunk(request("a", range(12)), 0, 12)], 0.0)
    round_trip_s = conn.metrics()["kvbench:lmcache_remote_seconds_total|op=put"]
    assert 0 < round_trip_s < 0.5
    streams = 2 if kv_store_server.kind == "valkey" else 1
    transfer_s = (0.012 + 0.006) / streams
    assert step.blocking_s == pytest.approx(0.006 + transfer_s + round_trip_s)
