"""KV events over ZMQ in vLLM's wire format: a real SUB socket, a real DEALER for replay."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import cbor2
import msgspec
import zmq
import zmq.asyncio
from emu_api_helpers import running_engine, tiny_args

from kvbench.emulator.api.kv_events import END_SEQ, event_encoder, event_v011, should_bind
from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.interface import AllBlocksCleared, BlockRemoved, BlockStored

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "vllm-0.32-cpu-kv-events.json"
PROMPT_A = list(range(1000, 1048))  # 3 full blocks
PROMPT_B = list(
    range(2000, 2096)
)  # 6 full blocks: evicts some of A's cached blocks from a 7-block pool


def _expected_hashes(tokens: list[int], seed: str = "0", block_size: int = 16) -> list[int]:
    """vLLM's chained sha256_cbor block hashes, as uint64 event ints (independent of the engine)."""
    digest = lambda obj: hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()  # noqa: E731
    parent, out = digest(seed), []
    for start in range(0, len(tokens) // block_size * block_size, block_size):
        parent = digest((parent, tuple(tokens[start : start + block_size]), None))
        out.append(int.from_bytes(parent, "big") & (2**64 - 1))
    return out


class RecordingEngine:
    """The real engine, recording the KV events each step hands the publisher."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.events: list = []

    def step(self, now_s):
        result = self._engine.step(now_s)
        self.events.extend(result.kv_events)
        return result

    def __getattr__(self, name):
        return getattr(self._engine, name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _recv_all(sub, idle_timeout_ms: int = 500) -> list[list[bytes]]:
    messages = []
    while await sub.poll(idle_timeout_ms):
        messages.append(await sub.recv_multipart())
    return messages


async def test_events_reach_a_subscriber_in_order_and_replay_returns_the_buffer():
    ctx = zmq.asyncio.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"kv-events")
    sub.bind("tcp://127.0.0.1:*")  # non-wildcard endpoint below: the publisher connects to us
    sub_endpoint = sub.getsockopt(zmq.LAST_ENDPOINT).decode()
    replay_endpoint = f"tcp://127.0.0.1:{_free_port()}"
    args = tiny_args(
        num_gpu_blocks_override=8,
        max_model_len=128,
        kv_events_config={
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": sub_endpoint,
            "replay_endpoint": replay_endpoint,
            "topic": "kv-events",
            "buffer_steps": 100,
        },
    )
    engine = RecordingEngine(build_engine(args))
    try:
        async with running_engine(args, engine=engine) as (_, session):
            for _ in range(3):  # let the PUB connect and see our subscription (the SUB must
                await sub.poll(100)  # process its commands to attach the pipe: slow joiner)
            for prompt in (PROMPT_A, PROMPT_B):
                async with session.post(
                    "/v1/completions", json={"prompt": prompt, "max_tokens": 1}
                ) as resp:
                    assert resp.status == 200
            messages = await _recv_all(sub)
            replayed = await _replay(ctx, replay_endpoint, start_seq=1)
    finally:
        sub.close(linger=0)
        ctx.term()
    assert [m[0] for m in messages] == [b"kv-events"] * len(messages)
    seqs = [int.from_bytes(m[1], "big") for m in messages]
    assert seqs == list(range(len(messages)))
    batches = [msgspec.msgpack.decode(m[2]) for m in messages]
    assert all(len(b) == 3 and isinstance(b[0], float) and b[2] == 0 for b in batches)
    wire_events = [e for b in batches for e in b[1]]
    assert wire_events == [event_v011(e) for e in engine.events]  # every step's events, in order
    hashes_a = _expected_hashes(PROMPT_A)
    assert wire_events[0] == ["BlockStored", hashes_a, None, PROMPT_A, 16, None, "GPU"]
    removed = [h for e in wire_events if e[0] == "BlockRemoved" for h in e[1]]
    # 7 usable blocks; A freed its 4 blocks tail-first behind 3 never-used ones; B's 6 blocks take the
    # 3 fresh ones, A's uncached partial block, then A's 3rd and 2nd blocks: evicted in that order
    assert removed == [hashes_a[2], hashes_a[1]]
    stored_b = [e for e in wire_events if e[0] == "BlockStored" and e[3][:16] == PROMPT_B[:16]]
    assert stored_b[0][1] == _expected_hashes(PROMPT_B)
    # replay from seq 1: every buffered batch from 1 on, byte-identical, then the end marker
    assert replayed[:-1] == [[b"", m[1], m[2]] for m in messages[1:]]
    assert replayed[-1] == [b"", END_SEQ, b""]


async def _replay(ctx, endpoint: str, start_seq: int) -> list[list[bytes]]:
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(endpoint)
    try:
        await dealer.send_multipart([b"", start_seq.to_bytes(8, "big")])
        frames = []
        while await dealer.poll(2000):
            frame = await dealer.recv_multipart()
            frames.append(frame)
            if frame[1] == END_SEQ:
                break
        return frames
    finally:
        dealer.close(linger=0)


def test_v032_format_matches_the_real_capture_keys():
    sample = json.loads(SAMPLE.read_text())
    real = {e["type"]: e for m in sample["messages"] for e in m["raw"][1]}
    encode = event_encoder({"KVBENCH_KV_EVENTS_FORMAT": "v0.32"})
    stored = encode(BlockStored([b"\x00" * 24 + (7).to_bytes(8, "big")], None, list(range(16)), 16))
    removed = encode(BlockRemoved([5]))
    assert list(stored) == list(real["BlockStored"]) and list(removed) == list(real["BlockRemoved"])
    assert (
        stored["block_hashes"] == [7]
        and stored["extra_keys"] == [None]
        and stored["medium"] == "GPU"
    )
    assert encode(AllBlocksCleared()) == {"type": "AllBlocksCleared"}


def test_v011_arrays_and_hash_rules():
    encode = event_encoder({})
    digest = bytes(range(32))
    assert encode(BlockStored([digest], digest, [1, 2], 2)) == [
        "BlockStored",
        [int.from_bytes(digest[-8:], "big")],
        int.from_bytes(digest[-8:], "big"),
        [1, 2],
        2,
        None,
        "GPU",
    ]
    assert encode(BlockRemoved([b"cpu-key"], medium="CPU")) == [
        "BlockRemoved",
        [b"cpu-key"],
        "CPU",
    ]  # as it came
    assert encode(AllBlocksCleared()) == ["AllBlocksCleared"]
    assert event_encoder({"VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES": "0"})(BlockRemoved([digest])) == [
        "BlockRemoved",
        [digest],
        "GPU",
    ]


def test_bind_or_connect_rule():
    assert should_bind("tcp://*:5557") and should_bind("tcp://[::]:5557")
    assert should_bind("ipc:///tmp/kv") and should_bind("inproc://kv")
    assert not should_bind("tcp://127.0.0.1:5557")
