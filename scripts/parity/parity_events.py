"""A ZMQ SUB that binds `tcp://127.0.0.1:PORT` (the publishers connect) and collects KV events.

Wire format (vLLM 0.32, reference/vllm-0.32-cpu-kv-events.json): 3 frames
`[topic, seq (uint64 big-endian), msgpack [ts, [events...], dp_rank]]`; each event a map tagged by
`type` (0.32) or a positional array led by the tag (0.11). `normalize_event` turns either into a
dict so the two peers' streams compare field by field.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import msgspec
import zmq

_V011_FIELDS = {
    "BlockStored": (
        "block_hashes",
        "parent_block_hash",
        "token_ids",
        "block_size",
        "lora_id",
        "medium",
        "lora_name",
        "extra_keys",
        "group_idx",
        "kv_cache_spec_kind",
    ),
    "BlockRemoved": ("block_hashes", "medium", "group_idx"),
    "AllBlocksCleared": (),
}


def normalize_event(raw) -> dict:
    if isinstance(raw, dict):
        return dict(raw)
    tag, values = raw[0], raw[1:]
    return {"type": tag, **dict(zip(_V011_FIELDS[tag], values))}


@dataclass
class EventLog:
    """Everything one SUB received, in arrival order."""

    events: list[dict] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)
    num_messages: int = 0
    last_arrival_s: float = 0.0

    def seq_gaps(self) -> list[tuple[int, int]]:
        """(expected, got) wherever the sequence numbers are not contiguous: lost messages."""
        return [(a + 1, b) for a, b in zip(self.seqs, self.seqs[1:]) if b != a + 1]


class EventCollector:
    """Owns one SUB socket on a background thread; `drain_quiet` waits for a quiet period."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.log = EventLog()
        self._lock = threading.Lock()
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.bind(f"tcp://127.0.0.1:{port}")
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=f"kv-sub-{port}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        decoder = msgspec.msgpack.Decoder()
        while self._running:
            if not self._sub.poll(50):
                continue
            topic, seq_bytes, payload = self._sub.recv_multipart()
            batch = decoder.decode(payload)
            with self._lock:
                log = self.log
                log.topics.add(topic.decode())
                log.seqs.append(int.from_bytes(seq_bytes, "big"))
                log.events.extend(normalize_event(e) for e in batch[1])
                log.num_messages += 1
                log.last_arrival_s = time.monotonic()

    def count(self) -> int:
        with self._lock:
            return len(self.log.events)

    def drain_quiet(self, quiet_s: float = 0.3, max_wait_s: float = 5.0) -> int:
        """Wait until no message arrived for `quiet_s` (bounded); returns the event count."""
        start = time.monotonic()
        while time.monotonic() - start < max_wait_s:
            with self._lock:
                last = self.log.last_arrival_s
            if time.monotonic() - max(last, start) >= quiet_s:
                break
            time.sleep(0.05)
        return self.count()

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2)
        self._sub.close(linger=0)
        self._ctx.term()
