"""KV-block index backends: in-memory LRU bounds, and real Redis / Valkey with llm-d's key layout."""

from __future__ import annotations

import re

import pytest
import redis

from kvbench.emulator.router.index_memory import IndexUnavailable, InMemoryIndex, PodEntry
from kvbench.emulator.router.index_redis import RedisIndex, normalize_address

A, B = "10.0.0.1:8000", "10.0.0.2:8000"


async def check_contract(index) -> None:
    await index.add("m", [11, 12, 13], [PodEntry(A, "gpu")])
    await index.add("m", [11, 12], [PodEntry(B, "cpu")])
    assert await index.lookup("m", [11, 12, 13, 14]) == [
        {A: {"gpu"}, B: {"cpu"}},
        {A: {"gpu"}, B: {"cpu"}},
        {A: {"gpu"}},
    ]
    assert await index.lookup("m", [99, 11]) == []  # stops at the first miss
    assert await index.lookup("other-model", [11]) == []
    await index.evict("m", 12, [PodEntry(A, "gpu")])
    assert await index.lookup("m", [11, 12, 13]) == [
        {A: {"gpu"}, B: {"cpu"}},
        {B: {"cpu"}},
        {A: {"gpu"}},
    ]
    await index.clear_pod(B)
    assert await index.lookup("m", [11, 12, 13]) == [{A: {"gpu"}}]


async def test_in_memory_index_contract():
    await check_contract(InMemoryIndex())


async def test_in_memory_index_bounds_keys_and_pods_per_key_lru():
    index = InMemoryIndex(size=2, pod_cache_size=2)
    await index.add("m", [1], [PodEntry("p1", "gpu"), PodEntry("p2", "gpu"), PodEntry("p3", "gpu")])
    assert await index.lookup("m", [1]) == [{"p2": {"gpu"}, "p3": {"gpu"}}]  # p1 was the LRU pod
    await index.add("m", [2], [PodEntry("p1", "gpu")])
    await index.lookup("m", [1])  # touch key 1: key 2 is now the LRU key
    await index.add("m", [3], [PodEntry("p1", "gpu")])
    assert await index.size() == 2
    assert await index.lookup("m", [2]) == []
    assert len(await index.lookup("m", [1])) == 1


async def test_redis_and_valkey_index_contract_and_llm_d_key_layout(kv_store_server):
    index = RedisIndex(
        kv_store_server.url, backend_type=kv_store_server.kind, wall_clock=lambda: 1_790_000_000.0
    )
    try:
        await check_contract(index)
        raw = redis.Redis.from_url(kv_store_server.redis_url, decode_responses=True)
        assert sorted(raw.keys("*")) == [
            "m@11",
            "m@13",
        ]  # m@12 lost its last holder when B was cleared
        assert raw.type("m@11") == "hash"
        assert raw.hgetall("m@11") == {f"{A}@gpu": "2026-09-21T14:13:20Z"}
        big = 0xFFFFFFFFFFFFFFF0
        await index.add("Qwen/Qwen3-8B", [big], [PodEntry(B, "gpu")])
        assert raw.hkeys(f"Qwen/Qwen3-8B@{big}") == [f"{B}@gpu"]  # decimal uint64, "<pod>@<tier>"
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", raw.hget(f"Qwen/Qwen3-8B@{big}", f"{B}@gpu")
        )
        raw.close()
    finally:
        await index.close()


def test_address_normalisation_follows_llm_d():
    assert normalize_address("valkey://h:1") == "redis://h:1"
    assert normalize_address("h:1") == "redis://h:1"
    assert normalize_address("redis://h:1") == "redis://h:1"
    assert normalize_address("valkeys://h:1") == "rediss://h:1"


async def test_stopped_store_raises_unavailable_and_opens_the_breaker(redis_server):
    now = [0.0]
    index = RedisIndex(redis_server.url, clock=lambda: now[0], breaker_open_s=1.0)
    try:
        await index.add("m", [1], [PodEntry(A, "gpu")])
        redis_server.pause()
        with pytest.raises(IndexUnavailable):
            await index.lookup("m", [1])
        redis_server.resume()
        with pytest.raises(IndexUnavailable, match="circuit open"):  # still open: no round trip
            await index.lookup("m", [1])
        now[0] = 1.5
        assert await index.lookup("m", [1]) == [{A: {"gpu"}}]
        redis_server.stop()
        now[0] = 3.0
        with pytest.raises(IndexUnavailable):
            await index.add("m", [2], [PodEntry(A, "gpu")])
    finally:
        await index.close()
