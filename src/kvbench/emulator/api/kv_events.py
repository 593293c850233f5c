"""KV-cache events over ZMQ, in vLLM's wire format (`distributed/kv_events.py`).

- Config: vLLM's `--kv-events-config` keys (`KVEventsConfig`), same defaults.
- PUB socket binds if the endpoint contains `*`, `::`, or is `ipc://` / `inproc://`; else connects.
- One message per engine step that has events: 3 frames `[topic, seq (8-byte big-endian),
  msgpack payload]`, payload `[ts, [events...], data_parallel_rank]`.
- Event encoding: vLLM 0.11 (default) is msgspec `array_like=True, tag=True`, so each event is a
  positional array led by its tag: `["BlockStored", block_hashes, parent_block_hash, token_ids,
  block_size, lora_id, medium]`, `["BlockRemoved", block_hashes, medium]`, `["AllBlocksCleared"]`.
  `KVBENCH_KV_EVENTS_FORMAT=v0.32` gives 0.32's tagged maps (`{"type": "BlockStored", ...}` with
  lora_name, extra_keys, group_idx, kv_cache_spec_kind), as captured from real vLLM 0.32.
- GPU block hashes go out as uint64 ints (`VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES`, default on: the
  last 8 bytes of the digest, big-endian); other media's hashes pass as they come.
- Replay: a ROUTER socket on `replay_endpoint`; a DEALER sends `[b"", start_seq (8 bytes)]` and gets
  `[b"", seq, payload]` for every buffered batch with seq >= start_seq, then `[b"", END_SEQ, b""]`
  (END_SEQ = -1 as 8 signed big-endian bytes). `buffer_steps` bounds the buffer.
- Publishing never blocks the step loop: `publish` enqueues; a thread encodes and sends.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq

from kvbench.emulator.engine.interface import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent
from kvbench.errors import UserError

END_SEQ = (-1).to_bytes(8, "big", signed=True)
_UINT64_MASK = (1 << 64) - 1


@dataclass(slots=True)
class KVEventsConfig:
    enable_kv_cache_events: bool = False
    publisher: str = "null"
    endpoint: str = "tcp://*:5557"
    replay_endpoint: str | None = None
    buffer_steps: int = 10_000
    hwm: int = 100_000
    max_queue_size: int = 100_000
    topic: str = ""

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> KVEventsConfig:
        if raw is None:
            return cls()
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UserError(f"--kv-events-config: unknown key {unknown[0]!r}")
        config = cls(**raw)
        if config.publisher not in ("zmq", "null"):
            raise UserError(
                f"--kv-events-config: publisher must be 'zmq' or 'null', got {config.publisher!r}"
            )
        return config

    @property
    def active(self) -> bool:
        return self.enable_kv_cache_events and self.publisher == "zmq"


def should_bind(endpoint: str) -> bool:
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def _gpu_hash(block_hash: Any, use_int: bool) -> Any:
    if use_int and isinstance(block_hash, bytes):
        return int.from_bytes(block_hash, "big") & _UINT64_MASK
    return block_hash


def _hashes(event: BlockStored | BlockRemoved, use_int: bool) -> tuple[list, Any]:
    is_gpu = event.medium in (None, "GPU")
    hashes = (
        [_gpu_hash(h, use_int) for h in event.block_hashes] if is_gpu else list(event.block_hashes)
    )
    parent = getattr(event, "parent_block_hash", None)
    return hashes, _gpu_hash(parent, use_int) if is_gpu else parent


def event_v011(event: KVEvent, use_int: bool = True) -> list:
    if isinstance(event, BlockStored):
        hashes, parent = _hashes(event, use_int)
        return [
            "BlockStored",
            hashes,
            parent,
            list(event.token_ids),
            event.block_size,
            event.lora_id,
            event.medium,
        ]
    if isinstance(event, BlockRemoved):
        hashes, _ = _hashes(event, use_int)
        return ["BlockRemoved", hashes, event.medium]
    if isinstance(event, AllBlocksCleared):
        return ["AllBlocksCleared"]
    raise TypeError(f"not a KV event: {event!r}")


def event_v032(event: KVEvent, use_int: bool = True) -> dict:
    if isinstance(event, BlockStored):
        hashes, parent = _hashes(event, use_int)
        return {
            "type": "BlockStored",
            "block_hashes": hashes,
            "parent_block_hash": parent,
            "token_ids": list(event.token_ids),
            "block_size": event.block_size,
            "lora_id": event.lora_id,
            "medium": event.medium,
            "lora_name": None,
            "extra_keys": [None] * len(hashes),
            "group_idx": 0,
            "kv_cache_spec_kind": "full_attention",
        }
    if isinstance(event, BlockRemoved):
        hashes, _ = _hashes(event, use_int)
        return {
            "type": "BlockRemoved",
            "block_hashes": hashes,
            "medium": event.medium,
            "group_idx": 0,
        }
    if isinstance(event, AllBlocksCleared):
        return {"type": "AllBlocksCleared"}
    raise TypeError(f"not a KV event: {event!r}")


def event_encoder(env: Mapping[str, str]) -> Callable[[KVEvent], Any]:
    use_int = env.get("VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES", "1") not in ("0", "false", "False")
    fmt = env.get("KVBENCH_KV_EVENTS_FORMAT", "v0.11")
    if fmt not in ("v0.11", "v0.32"):
        raise UserError(f"KVBENCH_KV_EVENTS_FORMAT: expected v0.11 or v0.32, got {fmt!r}")
    encode_one = event_v032 if fmt == "v0.32" else event_v011
    return lambda event: encode_one(event, use_int)


class ZmqEventPublisher:
    """PUB + optional ROUTER replay, served by one background thread that owns both sockets."""

    def __init__(
        self,
        config: KVEventsConfig,
        env: Mapping[str, str],
        data_parallel_rank: int = 0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._encode_event = event_encoder(env)
        self._dp_rank = data_parallel_rank
        self._wall_clock = wall_clock  # batch timestamps are wall-clock seconds, as vLLM's
        self._queue: queue.Queue = queue.Queue(maxsize=config.max_queue_size)
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=config.buffer_steps)
        self._topic = config.topic.encode("utf-8")
        self._ctx = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.set_hwm(config.hwm)
        self._replay = None
        try:
            if should_bind(config.endpoint):
                self._pub.bind(config.endpoint)
            else:
                self._pub.connect(config.endpoint)
            if config.replay_endpoint:
                self._replay = self._ctx.socket(zmq.ROUTER)
                self._replay.bind(config.replay_endpoint)
        except zmq.ZMQError as err:
            self._close_sockets()
            raise UserError(f"--kv-events-config: cannot open {config.endpoint}: {err}") from None
        self.num_dropped = 0
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="kv-events-publisher", daemon=True)
        self._thread.start()

    def publish(self, events: list[KVEvent]) -> None:
        """Queue one step's events (non-empty). Never blocks: a full queue drops and counts."""
        if not events:
            return
        try:
            self._queue.put_nowait((self._wall_clock(), list(events)))
        except queue.Full:
            self.num_dropped += 1

    def _serve(self) -> None:
        encoder = msgspec.msgpack.Encoder()
        seq = 0
        while self._running or not self._queue.empty():
            if self._replay is not None and self._replay.poll(0):
                self._serve_replay()
            try:
                item = self._queue.get(timeout=0.02)
            except queue.Empty:
                continue
            if item is None:
                break
            ts, events = item
            payload = encoder.encode([ts, [self._encode_event(e) for e in events], self._dp_rank])
            seq_bytes = seq.to_bytes(8, "big")
            self._pub.send_multipart((self._topic, seq_bytes, payload))
            self._buffer.append((seq, payload))
            seq += 1

    def _serve_replay(self) -> None:
        frames = self._replay.recv_multipart()  # type: ignore[union-attr]
        if len(frames) != 3:
            return  # vLLM ignores malformed replay requests too
        client_id, _, start_bytes = frames
        start_seq = int.from_bytes(start_bytes, "big")
        for seq, payload in list(self._buffer):
            if seq >= start_seq:
                self._replay.send_multipart((client_id, b"", seq.to_bytes(8, "big"), payload))  # type: ignore[union-attr]
        self._replay.send_multipart((client_id, b"", END_SEQ, b""))  # type: ignore[union-attr]

    def shutdown(self, timeout_s: float = 1.0) -> None:
        self._running = False
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=timeout_s)
        self._close_sockets()

    def _close_sockets(self) -> None:
        self._pub.close(linger=0)
        if self._replay is not None:
            self._replay.close(linger=0)
        self._ctx.term()


def make_publisher(
    raw_config: Mapping[str, Any] | None, env: Mapping[str, str]
) -> ZmqEventPublisher | None:
    config = KVEventsConfig.from_json(raw_config)
    return ZmqEventPublisher(config, env) if config.active else None
