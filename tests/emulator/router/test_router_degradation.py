"""What the router could not do is counted and exported: KV events lost beyond replay, failed
index lookups (from the scorer), so a run can count degradation per cell from /metrics."""

from __future__ import annotations

import pytest
import zmq.asyncio
from test_router_events import POD, TOPIC, ReplayServer, payload, stored

from kvbench.emulator.router.index_memory import InMemoryIndex
from kvbench.emulator.router.metrics import RouterDegradationCollector
from kvbench.emulator.router.subscriber import KVEventSubscriber


@pytest.fixture
async def zmq_context():
    context = zmq.asyncio.Context()
    yield context
    context.term()


def seq(n: int) -> bytes:
    return n.to_bytes(8, "big")


async def test_a_gap_without_a_replay_endpoint_counts_the_lost_messages():
    subscriber = KVEventSubscriber(index=InMemoryIndex())
    await subscriber.handle_message([TOPIC, seq(0), payload(stored([1]))])
    await subscriber.handle_message([TOPIC, seq(4), payload(stored([5]))])  # 1, 2, 3 never came
    assert subscriber.stats.gaps == 1 and subscriber.stats.lost_messages == 3


async def test_a_replay_that_no_longer_holds_the_gap_counts_what_it_lacked(zmq_context):
    # the engine's replay buffer starts at 3: 1 and 2 are gone for good
    server = ReplayServer(zmq_context, [(3, payload(stored([4]))), (4, payload(stored([5])))])
    subscriber = KVEventSubscriber(index=InMemoryIndex(), replay_endpoints={POD: server.url})
    subscriber._context = zmq_context
    try:
        await subscriber.handle_message([TOPIC, seq(0), payload(stored([1]))])
        await subscriber.handle_message([TOPIC, seq(4), payload(stored([5]))])
        assert subscriber.stats.unrecoverable_gaps == 1
        assert subscriber.stats.lost_messages == 2
    finally:
        await server.close()


class _Scorer:
    lookup_failures = 7


async def test_the_counters_are_exported():
    subscriber = KVEventSubscriber(index=InMemoryIndex())
    subscriber.stats.lost_messages, subscriber.stats.apply_failures = 3, 2
    families = {
        f.name: f.samples[0].value
        for f in RouterDegradationCollector([_Scorer(), object()], [subscriber.stats]).collect()
    }
    assert families == {
        "kvbench_router_index_lookup_failures": 7,
        "kvbench_router_kv_events_lost": 3,
        "kvbench_router_kv_events_apply_failures": 2,
        "kvbench_router_kv_events_decode_errors": 0,
    }
