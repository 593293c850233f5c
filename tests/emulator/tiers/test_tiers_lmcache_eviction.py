"""LMCache's remote tier on real Redis / Valkey that evict under `maxmemory` + `allkeys-lru`.

LMCache sets no TTL and leaves eviction to the store; the store evicts single keys, so a chunk can
lose its `kv_bytes` and keep its `metadata` (lookup says hit, the read misses and deletes the
metadata) or the reverse (lookup misses; the orphan payload waits for eviction or a rewrite).
Which keys the store evicts is its own (sampled, approximate LRU) choice, so the expectations here
are computed exactly from a snapshot of the store's keys, with eviction frozen (maxmemory 0) after
the fill so that the snapshot cannot change under the checks.

Facts: TP=1, 1000 KV bytes/token, chunk_size 8, payload scale 1/4 -> 2000-byte kv_bytes per chunk;
60 prompts of 4 chunks write ~1 MB of payload into ~0.5 MB of room above the server's baseline.
"""

import pytest
import redis
from tier_fakes import FakeRequest, chunk, facts

from kvbench.emulator.stores import KVStoreServer
from kvbench.emulator.tiers.lmcache import LMCacheConnector
from kvbench.emulator.tiers.lmcache_config import load_lmcache_config
from kvbench.emulator.tiers.remote_store import RemoteKVStore

MAXMEMORY_BYTES = 1_500_000  # an idle server uses ~1.0 MB (Redis 7.0) / ~1.1 MB (Valkey)
PAYLOAD_BYTES = 2000
ONE_WRITE_BYTES = (
    PAYLOAD_BYTES + 256
)  # a store evicts before each command, so one SET may overshoot
NUM_PROMPTS, PROMPT_TOKENS = 60, 32
ERROR_KEYS = [f"kvbench:lmcache_remote_errors_total|op={op}" for op in ("lookup", "get", "put")]


def make(server):
    options = {
        "lmcache.chunk_size": 8,
        "lmcache.remote_url": server.url,
        "lmcache.local_cpu": False,
        "kvbench.remote_payload_scale": 0.25,
    }
    config = load_lmcache_config({}, options)
    remote = RemoteKVStore(config.remote_url, 0.5, config.remote_retry_interval_s)
    return LMCacheConnector(
        config, facts(tensor_parallel_size=1), init_hash=123, remote=remote, num_layers=2
    )


def prompt(index):
    return [index * 1000 + t for t in range(PROMPT_TOKENS)]


def request(request_id, tokens):
    """The prompt plus one decoded token, so a whole-prompt hit is not reduced by one."""
    return FakeRequest(request_id, list(tokens) + [7], len(tokens))


def evict_memory_bytes(client):
    info = client.info("memory")
    return info["used_memory"] - info.get("mem_not_counted_for_evict", 0)


def fill(conn, client):
    """Stores every prompt through the connector; returns the highest evictable memory seen."""
    peak_bytes = 0
    for index in range(NUM_PROMPTS):
        req = request(f"fill{index}", prompt(index))
        conn.build_step([chunk(req, 0, PROMPT_TOKENS)], float(index))
        conn.request_finished(req, [], float(index))
        peak_bytes = max(peak_bytes, evict_memory_bytes(client))
    return peak_bytes


def snapshot(conn, client, index):
    """Per chunk of prompt `index`: (kv_bytes exists, metadata exists)."""
    store = conn.remote
    keys = [conn.rank_keys(c)[0] for c in conn.token_db.chunks(prompt(index))]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.exists(store.kv_key(key))
        pipe.exists(store.metadata_key(key))
    flags = [bool(v) for v in pipe.execute()]
    return [(flags[i], flags[i + 1]) for i in range(0, len(flags), 2)]


def leading_hits(states):
    """Chunks a lookup finds: consecutive from the start while the metadata exists."""
    count = 0
    for _, has_metadata in states:
        if not has_metadata:
            break
        count += 1
    return count


@pytest.fixture(params=["redis", "valkey"])
def small_store(request):
    with KVStoreServer(request.param, maxmemory_bytes=MAXMEMORY_BYTES) as server:
        yield server


def test_filling_past_maxmemory_evicts_keys_and_stays_under_the_limit(small_store):
    conn = make(small_store)
    client = redis.Redis.from_url(small_store.redis_url)
    peak_bytes = fill(conn, client)
    assert peak_bytes <= MAXMEMORY_BYTES + ONE_WRITE_BYTES
    written_keys = NUM_PROMPTS * 4 * 2
    evicted_keys = client.info("stats")["evicted_keys"]
    assert 0 < evicted_keys < written_keys
    assert client.dbsize() == written_keys - evicted_keys
    metrics = conn.metrics()
    assert (
        metrics["lmcache:num_remote_write_requests_total"] == NUM_PROMPTS * 4
    )  # every put acknowledged
    assert [metrics[k] for k in ERROR_KEYS] == [0, 0, 0]  # eviction is not an error
    assert metrics["kvbench:lmcache_remote_available"] == 1.0


def test_evicted_chunks_are_misses_dangling_metadata_is_cleaned_and_serving_goes_on(small_store):
    conn = make(small_store)
    client = redis.Redis.from_url(small_store.redis_url)
    fill(conn, client)
    client.config_set("maxmemory", 0)  # freeze: no more eviction while the snapshot is checked
    before = {i: snapshot(conn, client, i) for i in range(NUM_PROMPTS)}

    # 1. lookup: hits stop at the first chunk whose metadata was evicted, whatever follows it
    hits = {}
    for i in range(NUM_PROMPTS):
        hits[i] = leading_hits(before[i])
        assert conn.get_num_new_matched_tokens(request(f"a{i}", prompt(i)), 0, 100.0) == (
            8 * hits[i],
            False,
        )
    assert any(
        hits[i] < 4 and any(m for _, m in before[i][hits[i] :]) for i in before
    )  # a gap was hit

    # 2. retrieve: a found chunk whose kv_bytes was evicted is a load miss; its metadata is deleted
    dangling = {i: [n for n in range(hits[i]) if not before[i][n][0]] for i in before}
    assert sum(map(len, dangling.values())) > 0
    for i in range(NUM_PROMPTS):
        if hits[i]:
            conn.update_state_after_alloc(request(f"a{i}", prompt(i)), [], 8 * hits[i], 101.0)
    metrics = conn.metrics()
    assert metrics["kvbench:lmcache_remote_load_misses_total"] == sum(map(len, dangling.values()))
    for i in range(NUM_PROMPTS):
        expected = [
            (False, False) if n in dangling[i] else state for n, state in enumerate(before[i])
        ]
        assert snapshot(conn, client, i) == expected

    # 3. the next request misses from the cleaned chunk on, saves the rest, and then hits fully
    for i in range(NUM_PROMPTS):
        req = request(f"b{i}", prompt(i))
        again = leading_hits(snapshot(conn, client, i))
        assert again == (min(dangling[i]) if dangling[i] else hits[i])
        assert conn.get_num_new_matched_tokens(req, 0, 102.0) == (8 * again, False)
        conn.build_step([chunk(req, 0, PROMPT_TOKENS)], 102.0)
        conn.request_finished(req, [], 102.0)
        assert conn.get_num_new_matched_tokens(request(f"c{i}", prompt(i)), 0, 103.0) == (
            PROMPT_TOKENS,
            False,
        )
    metrics = conn.metrics()
    assert [metrics[k] for k in ERROR_KEYS] == [0, 0, 0]
    assert metrics["kvbench:lmcache_remote_available"] == 1.0


def test_a_store_that_cannot_evict_enough_refuses_writes_without_breaking_the_connector(
    kv_store_server,
):
    """maxmemory below the server's own baseline: every SET answers OOM (a server error reply)."""
    client = redis.Redis.from_url(kv_store_server.redis_url)
    client.config_set("maxmemory", 500_000)
    conn = make(kv_store_server)
    req = request("a", prompt(0))
    conn.build_step([chunk(req, 0, PROMPT_TOKENS)], 0.0)  # must not raise
    metrics = conn.metrics()
    assert metrics["kvbench:lmcache_remote_errors_total|op=put"] == 1
    assert metrics.get("lmcache:num_remote_write_requests_total", 0) == 0
    assert client.dbsize() == 0
    # a refused write is the store's answer, not a lost connection: reads go on, no back-off
    assert metrics["kvbench:lmcache_remote_available"] == 1.0
    assert conn.get_num_new_matched_tokens(request("b", prompt(0)), 0, 0.1) == (0, False)
    assert conn.metrics()["kvbench:lmcache_remote_errors_total|op=lookup"] == 0
