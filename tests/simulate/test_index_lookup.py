"""The simulated router's scripted lookup answers exactly what the live pipelined HKEYS lookup
answers on the same real Redis / Valkey store: holders up to the first key nobody holds."""

import asyncio

import pytest
import redis

from kvbench.emulator.router.index_memory import IndexUnavailable, PodEntry
from kvbench.emulator.router.index_redis import RedisIndex
from kvbench.emulator.stores import KVStoreServer
from kvbench.simulate.index_lookup import LinkedLookupIndex
from kvbench.simulate.store_link import StoreLink, tcp_address

GPU = PodEntry("pod-a:1", "gpu")
CPU_B = PodEntry("pod-b:1", "cpu")
GPU_B = PodEntry("pod-b:1", "gpu")


async def fill(index: RedisIndex) -> None:
    await index.add("m", [1, 2, 3, 4], [GPU])
    await index.add("m", [1, 2], [CPU_B, GPU_B])
    await index.add("m", [6, 7], [GPU])  # after the hole at 5: never part of a prefix
    await index.add("other", [1, 2, 3, 4, 5, 6], [GPU_B])  # another model's keys


@pytest.mark.parametrize("kind", ["redis", "valkey"])
def test_scripted_lookup_answers_what_the_pipelined_lookup_answers(kind):
    queries = [[1, 2, 3, 4, 5, 6, 7], [1, 2, 3], [5, 6, 7], [2, 3], [], [9], list(range(1, 300))]
    queries += [[2, 3, 4, 5, 6], [1, 9, 2, 3, 4]]  # a hole in the second batch, in the first
    with KVStoreServer(kind) as store:

        async def compare() -> list:
            index = RedisIndex(store.redis_url, backend_type=kind, lookup_batch_keys=2)
            scripted = LinkedLookupIndex(index, StoreLink(index))
            await fill(index)
            answers = []
            for hashes in queries:
                live = await index.lookup("m", hashes)
                assert await scripted.lookup("m", hashes) == live, hashes
                answers.append(live)
            await scripted.close()
            return answers

        answers = asyncio.run(compare())
    assert len(answers[0]) == 4  # stops at the hole (key 5)
    assert answers[0][0] == {"pod-a:1": {"gpu"}, "pod-b:1": {"cpu", "gpu"}}
    assert answers[0][2] == {"pod-a:1": {"gpu"}}
    assert answers[2] == [] and answers[4] == [] and answers[5] == []
    assert len(answers[6]) == 4


def test_scripted_lookup_takes_the_index_circuit_breaker():
    with KVStoreServer("redis") as store:

        async def lookups() -> None:
            now = [0.0]
            index = RedisIndex(store.redis_url, clock=lambda: now[0])
            scripted = LinkedLookupIndex(index, StoreLink(index))
            index._open_until_s = 5.0  # as after a failure at t=4 with breaker_open_s=1
            for hashes in ([1], []):
                with pytest.raises(IndexUnavailable):
                    await scripted.lookup("m", hashes)
            now[0] = 6.0
            assert await scripted.lookup("m", [1]) == []
            await scripted.close()

        asyncio.run(lookups())


def test_store_link_speaks_plain_tcp_urls_only():
    assert tcp_address("redis://127.0.0.1:6379") == ("127.0.0.1", 6379, 0)
    assert tcp_address("redis://localhost:7000/3") == ("localhost", 7000, 3)
    for url in ("rediss://h:1", "redis://u:p@h:1", "unix:///tmp/s", "redis://h", "redis://h:1/x"):
        assert tcp_address(url) is None, url


def test_store_link_selects_the_index_database():
    with KVStoreServer("redis") as store:
        index = RedisIndex(store.redis_url + "/2")
        link = StoreLink(index)
        assert link.call(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n") == ["OK"]
        link.close()
        client = redis.Redis.from_url(store.redis_url + "/2", decode_responses=True)
        assert client.get("k") == "v"
        client.close()


def test_hkeys_packed_from_hashes_are_the_hkeys_of_the_redis_keys():
    from kvbench.emulator.router.index_redis import redis_key
    from kvbench.simulate.index_lookup import pack_hkeys, pack_hkeys_of

    hashes = [0, 7, 2**63 + 5, 2**64 - 1, 123456789]
    for model in ("Qwen/Qwen3-8B", "m", "modèle"):
        assert pack_hkeys_of(model, hashes) == pack_hkeys([redis_key(model, h) for h in hashes])
    assert pack_hkeys_of("m", []) == b""


def test_lookup_packs_what_pack_hkeys_of_packs_before_and_after_its_cache_empties(monkeypatch):
    from kvbench.simulate.index_lookup import pack_hkeys_of

    monkeypatch.setattr(LinkedLookupIndex, "MAX_PACKED_KEYS", 4)
    lookup = LinkedLookupIndex.__new__(LinkedLookupIndex)  # _pack needs no index nor link
    lookup._packed = {}
    batches = [[1, 2, 3], [2, 3, 4, 5], [5, 1], [], [2**64 - 1, 9, 9], [7, 8, 9, 10, 11]]
    for model in ("Qwen/Qwen3-8B", "m"):
        for hashes in batches:
            assert lookup._pack(model, hashes) == pack_hkeys_of(model, hashes)
            assert len(lookup._packed[model]) <= 4 + len(hashes)
