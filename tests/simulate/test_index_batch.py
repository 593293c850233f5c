"""A step's KV events in one script, and many steps' events deferred to one flush, leave a real
Redis / Valkey index exactly as the subscriber's one-write-at-a-time apply does."""

import asyncio

import pytest
import redis

from kvbench.emulator.engine.interface import AllBlocksCleared, BlockRemoved, BlockStored
from kvbench.emulator.router.events import apply_events
from kvbench.emulator.router.index_redis import RedisIndex
from kvbench.emulator.stores import KVStoreServer
from kvbench.simulate.drive import CoroutineDriver
from kvbench.simulate.index_batch import PendingWrites, apply_events_pipelined
from kvbench.simulate.store_link import StoreLink

EVENTS = [
    BlockStored([11, 12, 13], None, [], 16, medium="GPU"),
    BlockStored([12, 14], 11, [], 16, medium="CPU"),
    BlockRemoved([12], medium="GPU"),
    BlockStored([15], 13, [], 16),
    AllBlocksCleared(),
    BlockStored([21, 22], None, [], 16),
    BlockRemoved([21, 99], medium="GPU"),
]


def index_state(url: str, model: str) -> dict:
    client = redis.Redis.from_url(url, decode_responses=True)
    keys = sorted(k for k in client.keys(f"{model}@*"))
    state = {k: sorted(client.hkeys(k)) for k in keys}
    client.close()
    return state


def run_on_fresh_store(kind: str, apply) -> dict:
    """AllBlocksCleared scans every key of the store, so each path gets a store of its own."""
    with KVStoreServer(kind) as store:

        async def replay() -> None:
            index = RedisIndex(store.redis_url, backend_type=kind)
            await apply(index, "pod-a:1", "m", EVENTS[:4])
            await apply(index, "pod-b:1", "m", EVENTS[:4])
            await apply(index, "pod-a:1", "m", EVENTS[4:])
            await index.close()

        asyncio.run(replay())
        return index_state(store.redis_url, "m")


def run_deferred(kind: str, linked: bool = False) -> tuple[dict, int]:
    """The same three batches delivered to PendingWrites and written by one flush (the writes
    over a StoreLink when `linked`)."""
    with KVStoreServer(kind) as store:

        async def replay() -> int:
            index = RedisIndex(store.redis_url, backend_type=kind)
            link = StoreLink(index) if linked else None
            pending = PendingWrites(index, link)
            pending.add("pod-a:1", "m", EVENTS[:4])
            pending.add("pod-b:1", "m", EVENTS[:4])
            pending.add("pod-a:1", "m", EVENTS[4:])
            lost = await pending.flush()
            assert not pending
            await index.close()
            return lost + 100 * pending.round_trips

        packed = asyncio.run(replay())
        return index_state(store.redis_url, "m"), packed


@pytest.mark.parametrize("kind", ["redis", "valkey"])
def test_pipelined_apply_writes_what_the_one_by_one_apply_writes(kind):
    one = run_on_fresh_store(kind, apply_events)
    batch = run_on_fresh_store(kind, apply_events_pipelined)
    assert one == batch
    assert one["m@22"] == ["pod-a:1@gpu"] and "m@21" not in one
    assert one["m@12"] == ["pod-b:1@cpu"]  # pod-a cleared; pod-b's GPU entry removed, CPU kept


@pytest.mark.parametrize("kind", ["redis", "valkey"])
@pytest.mark.parametrize("linked", [False, True])
def test_deferred_batches_write_what_one_by_one_applies_write(kind, linked):
    state, lost_and_trips = run_deferred(kind, linked)
    assert state == run_on_fresh_store(kind, apply_events)
    assert lost_and_trips == 300  # nothing lost; writes, the clear, writes: three round trips


def test_linked_flush_without_a_clear_never_suspends():
    with KVStoreServer("redis") as store:
        index = RedisIndex(store.redis_url)
        link = StoreLink(index)
        pending = PendingWrites(index, link)
        pending.add("pod-a:1", "m", EVENTS[:4])
        assert not pending.needs_loop
        assert CoroutineDriver(use_asyncio=False).run(pending.flush()) == 0
        pending.add("pod-a:1", "m", EVENTS[4:])
        assert pending.needs_loop  # AllBlocksCleared: the index's own client scans and clears
        link.close()
        state = index_state(store.redis_url, "m")
    assert state["m@11"] == ["pod-a:1@gpu"] and state["m@12"] == ["pod-a:1@cpu"]


def test_a_failed_linked_write_opens_the_breaker_and_loses_its_batches():
    with KVStoreServer("redis") as store:
        now = [0.0]
        index = RedisIndex(store.redis_url, clock=lambda: now[0], breaker_open_s=1.0)
        link = StoreLink(index)
        pending = PendingWrites(index, link)
        pending.add("pod-a:1", "m", EVENTS[:2])
        pending.add("pod-b:1", "m", EVENTS[:2])
        store.stop()
        assert CoroutineDriver(use_asyncio=False).run(pending.flush()) == 2
        assert index.breaker_open()
        now[0] = 2.0
        assert not index.breaker_open()
        link.close()
