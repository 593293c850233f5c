"""KV events: both wire generations decode; the subscriber applies them in order, recovers gaps
and late joins through the engine's replay socket, and survives an index store outage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest
import zmq
import zmq.asyncio

from kvbench.emulator.engine.interface import AllBlocksCleared, BlockRemoved, BlockStored
from kvbench.emulator.router.events import decode_payload, hash_as_uint64, parse_topic
from kvbench.emulator.router.index_memory import InMemoryIndex
from kvbench.emulator.router.index_redis import RedisIndex
from kvbench.emulator.router.subscriber import KVEventSubscriber
from kvbench.emulator.stores import free_port

CAPTURE = Path(__file__).resolve().parents[2] / "fixtures" / "vllm-0.32-cpu-kv-events.json"
POD = "127.0.0.1:9001"
TOPIC = f"kv@{POD}@m".encode()


def payload(*events) -> bytes:
    return msgspec.msgpack.encode([1.5, list(events), 0])


def stored(hashes, medium="GPU"):
    return ["BlockStored", hashes, None, [1] * (16 * len(hashes)), 16, None, medium]


def message(seq: int, *events) -> list[bytes]:
    return [TOPIC, seq.to_bytes(8, "big"), payload(*events)]


def test_decode_v011_positional_events_and_byte_hashes():
    digest = bytes(range(32))
    batch = decode_payload(
        payload(
            ["BlockStored", [digest, 7], None, [1, 2], 16, None, "CPU"],
            ["BlockRemoved", [7], "GPU"],
            ["AllBlocksCleared"],
        )
    )
    assert batch.events == [
        BlockStored([int.from_bytes(digest[-8:], "big"), 7], None, [1, 2], 16, None, "CPU"),
        BlockRemoved([7], "GPU"),
        AllBlocksCleared(),
    ]
    assert batch.data_parallel_rank == 0
    old = decode_payload(
        msgspec.msgpack.encode([0.0, [["BlockStored", [1], 5, [], 16, None]]])
    )  # 0.10: no medium
    assert old.events[0].medium == "GPU" and old.events[0].parent_block_hash == 5


def test_decode_real_vllm_032_capture():
    capture = json.loads(CAPTURE.read_text())
    decoded_types = []
    for captured in capture["messages"]:  # the file keeps an excerpt of the capture's messages
        batch = decode_payload(msgspec.msgpack.encode(captured["raw"]))
        assert len(batch.events) == len(captured["raw"][1])
        for raw, event in zip(captured["raw"][1], batch.events):
            decoded_types.append(type(event).__name__)
            assert type(event).__name__ == raw["type"]
            assert event.block_hashes == raw["block_hashes"]
    assert {"BlockStored", "BlockRemoved"} <= set(decoded_types)
    first = decode_payload(msgspec.msgpack.encode(capture["messages"][0]["raw"])).events[0]
    assert (first.block_size, first.medium, first.parent_block_hash) == (128, "GPU", None)


def test_hash_and_topic_helpers():
    assert hash_as_uint64(-1) == 0xFFFFFFFFFFFFFFFF
    assert hash_as_uint64(b"\x00" * 24 + b"\x00\x00\x00\x00\x00\x00\x01\x02") == 258
    assert parse_topic("kv@10.0.0.1:8000@Qwen/Qwen3-8B") == ("10.0.0.1:8000", "Qwen/Qwen3-8B")


async def test_in_order_apply_tiers_remove_and_clear():
    index = InMemoryIndex()
    subscriber = KVEventSubscriber(index=index)
    await subscriber.handle_message(message(0, stored([1, 2]), stored([2], "CPU")))
    assert await index.lookup("m", [1, 2]) == [{POD: {"gpu"}}, {POD: {"gpu", "cpu"}}]
    await subscriber.handle_message(message(1, ["BlockRemoved", [2], "GPU"]))
    assert await index.lookup("m", [1, 2]) == [{POD: {"gpu"}}, {POD: {"cpu"}}]
    await subscriber.handle_message(message(1, ["AllBlocksCleared"]))  # duplicate seq: skipped
    assert len(await index.lookup("m", [1, 2])) == 2
    await subscriber.handle_message(message(2, ["AllBlocksCleared"]))
    assert await index.lookup("m", [1]) == []
    await subscriber.handle_message(message(0, stored([5])))  # seq 0 again: the engine restarted
    assert subscriber.stats.restarts == 1 and await index.lookup("m", [5]) == [{POD: {"gpu"}}]


class ReplayServer:
    """The engine side of vLLM's replay protocol, for tests: ROUTER, [id, b"", start] in."""

    def __init__(self, context: zmq.asyncio.Context, messages: list[tuple[int, bytes]]) -> None:
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.messages = messages
        self.requests: list[int] = []
        self.socket = context.socket(zmq.ROUTER)
        self.socket.bind(self.url)
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            client, _, start = await self.socket.recv_multipart()
            start_seq = int.from_bytes(start, "big")
            self.requests.append(start_seq)
            for seq, data in self.messages:
                if seq >= start_seq:
                    await self.socket.send_multipart([client, b"", seq.to_bytes(8, "big"), data])
            await self.socket.send_multipart(
                [client, b"", (-1).to_bytes(8, "big", signed=True), b""]
            )

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.socket.close(linger=0)


@pytest.fixture
async def zmq_context():
    context = zmq.asyncio.Context()
    yield context
    context.term()


async def test_late_join_and_gap_are_recovered_through_replay(zmq_context):
    history = [
        (0, payload(stored([1]))),
        (1, payload(stored([2]))),
        (2, payload(["BlockRemoved", [1], "GPU"])),
        (3, payload(stored([3]))),
        (4, payload(stored([4]))),
    ]
    server = ReplayServer(zmq_context, history[:2])  # the engine has published seq 0 and 1 so far
    index = InMemoryIndex()
    subscriber = KVEventSubscriber(index=index, replay_endpoints={POD: server.url})
    subscriber._context = zmq_context
    try:
        await subscriber.handle_message(
            [TOPIC, (1).to_bytes(8, "big"), history[1][1]]
        )  # joined late at seq 1
        assert server.requests == [0]
        assert await index.lookup("m", [1, 2]) == [{POD: {"gpu"}}, {POD: {"gpu"}}]
        server.messages.extend(history[2:])
        await subscriber.handle_message(
            [TOPIC, (4).to_bytes(8, "big"), history[4][1]]
        )  # 2 and 3 were lost
        assert server.requests == [0, 2]
        assert await index.lookup("m", [1]) == []  # seq 2's removal was replayed
        assert await index.lookup("m", [3]) == [{POD: {"gpu"}}]
        assert await index.lookup("m", [4]) == [{POD: {"gpu"}}]
        assert subscriber.streams[POD].last_seq == 4 and subscriber.stats.gaps == 0
    finally:
        await server.close()


async def test_store_outage_is_healed_by_replay_after_the_breaker_closes(zmq_context, redis_server):
    now = [0.0]
    history = [(0, payload(stored([1]))), (1, payload(stored([2]))), (2, payload(stored([3])))]
    server = ReplayServer(zmq_context, history)
    index = RedisIndex(redis_server.url, clock=lambda: now[0], breaker_open_s=1.0)
    subscriber = KVEventSubscriber(
        index=index, replay_endpoints={POD: server.url}, clock=lambda: now[0]
    )
    subscriber._context = zmq_context
    try:
        await subscriber.handle_message([TOPIC, (0).to_bytes(8, "big"), history[0][1]])
        redis_server.pause()
        await subscriber.handle_message(
            [TOPIC, (1).to_bytes(8, "big"), history[1][1]]
        )  # store frozen
        redis_server.resume()
        assert subscriber.streams[POD].last_seq == 0 and subscriber.stats.apply_failures == 1
        now[0] = 2.0  # breaker closed again
        await subscriber.handle_message([TOPIC, (2).to_bytes(8, "big"), history[2][1]])
        assert server.requests == [1]
        assert await index.lookup("m", [1, 2, 3]) == [{POD: {"gpu"}}] * 3
    finally:
        await server.close()
        await index.close()


async def test_real_zmq_sub_binds_and_engine_pub_connects(zmq_context):
    index = InMemoryIndex()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    subscriber = KVEventSubscriber(index=index, endpoint=endpoint)
    await subscriber.start()
    publisher = zmq_context.socket(zmq.PUB)
    publisher.connect(endpoint)
    try:
        for seq in range(200):  # until the subscription has propagated (ZMQ slow joiner), bounded
            await publisher.send_multipart(message(seq, stored([seq + 1000])))
            await asyncio.sleep(0.01)
            if subscriber.stats.messages >= 3:
                break
        await publisher.send_multipart(
            [b"other-topic", b"\x00" * 8, payload(stored([1]))]
        )  # filtered out
        await publisher.send_multipart(
            message(seq + 1, ["BlockStored", [42], None, [], 16, None, "CPU"])
        )
        for _ in range(100):
            await asyncio.sleep(0.01)
            if await index.lookup("m", [42]):
                break
        assert await index.lookup("m", [42]) == [{POD: {"cpu"}}]
        assert await index.lookup("m", [1]) == []
    finally:
        publisher.close(linger=0)
        await subscriber.stop()
