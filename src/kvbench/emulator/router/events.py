"""vLLM KV events -> decoded batches (both wire generations) -> index updates.

Wire (vLLM distributed/kv_events.py): 3 frames [topic, seq uint64 big-endian, msgpack payload].
Payload = [ts, [events...], data_parallel_rank?]. An event is either
- vLLM 0.11 (msgspec array_like, tagged): ["BlockStored", block_hashes, parent_block_hash,
  token_ids, block_size, lora_id, medium, ...newer fields], ["BlockRemoved", block_hashes, medium],
  ["AllBlocksCleared"]; or
- vLLM 0.32 (tagged maps): {"type": "BlockStored", "block_hashes": [...], ..., "medium": "GPU"}.
Block hashes are uint64 as they are, or byte strings whose last 8 bytes are read big-endian
(llm-d getHashAsUint64).

Index updates (llm-d kvevents/pool.go): BlockStored -> add(hashes, {pod, lower(medium) or "gpu"});
BlockRemoved -> evict each hash for {pod, tier}; AllBlocksCleared -> clear the pod over every tier.
That is llm-d-kv-cache HEAD's behaviour (#626); v0.4 ignored AllBlocksCleared, which leaves a reset
engine's blocks predicted forever, so kvbench follows HEAD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import msgspec

from kvbench.emulator.engine.interface import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent
from kvbench.emulator.router.index_memory import KVBlockIndex, PodEntry

END_SEQ = 0xFFFFFFFFFFFFFFFF  # -1 as 8 signed big-endian bytes, read unsigned


class EventDecodeError(ValueError):
    pass


@dataclass
class EventBatch:
    ts: float
    events: list[KVEvent]
    data_parallel_rank: int | None = None


def hash_as_uint64(value: Any) -> int:
    if isinstance(value, int):
        return value & 0xFFFFFFFFFFFFFFFF
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(bytes(value[-8:]), "big")
    raise EventDecodeError(f"block hash of type {type(value).__name__}")


def _event_from_array(raw: list) -> KVEvent:
    tag = raw[0]
    if tag == "BlockStored":
        medium = raw[6] if len(raw) > 6 else "GPU"
        parent = raw[2]
        return BlockStored(
            block_hashes=[hash_as_uint64(h) for h in raw[1]],
            parent_block_hash=None if parent is None else hash_as_uint64(parent),
            token_ids=list(raw[3] or []),
            block_size=int(raw[4]),
            lora_id=raw[5] if len(raw) > 5 else None,
            medium=medium,
        )
    if tag == "BlockRemoved":
        return BlockRemoved(
            block_hashes=[hash_as_uint64(h) for h in raw[1]],
            medium=raw[2] if len(raw) > 2 else "GPU",
        )
    if tag == "AllBlocksCleared":
        return AllBlocksCleared()
    raise EventDecodeError(f"unknown event tag {tag!r}")


def _event_from_map(raw: dict) -> KVEvent:
    tag = raw.get("type")
    if tag == "BlockStored":
        parent = raw.get("parent_block_hash")
        return BlockStored(
            block_hashes=[hash_as_uint64(h) for h in raw.get("block_hashes", [])],
            parent_block_hash=None if parent is None else hash_as_uint64(parent),
            token_ids=list(raw.get("token_ids") or []),
            block_size=int(raw.get("block_size", 0)),
            lora_id=raw.get("lora_id"),
            medium=raw.get("medium", "GPU"),
        )
    if tag == "BlockRemoved":
        return BlockRemoved(
            block_hashes=[hash_as_uint64(h) for h in raw.get("block_hashes", [])],
            medium=raw.get("medium", "GPU"),
        )
    if tag == "AllBlocksCleared":
        return AllBlocksCleared()
    raise EventDecodeError(f"unknown event type {tag!r}")


def decode_payload(payload: bytes) -> EventBatch:
    try:
        raw = msgspec.msgpack.decode(payload)
    except msgspec.DecodeError as err:
        raise EventDecodeError(f"not msgpack: {err}") from err
    if not isinstance(raw, list) or len(raw) < 2 or not isinstance(raw[1], list):
        raise EventDecodeError("payload is not [ts, events, ...]")
    events = []
    for item in raw[1]:
        if isinstance(item, list) and item:
            events.append(_event_from_array(item))
        elif isinstance(item, dict):
            events.append(_event_from_map(item))
        else:
            raise EventDecodeError(f"event of type {type(item).__name__}")
    rank = raw[2] if len(raw) > 2 else None
    return EventBatch(ts=float(raw[0]), events=events, data_parallel_rank=rank)


def parse_topic(topic: str) -> tuple[str, str]:
    """`kv@<pod>@<model>` -> (pod, model); llm-d splits on '@'."""
    parts = topic.split("@", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise EventDecodeError(f"topic {topic!r} is not kv@<pod>@<model>")
    return parts[1], parts[2]


def tier_of(medium: str | None) -> str:
    return medium.lower() if medium else "gpu"


async def apply_events(index: KVBlockIndex, pod: str, model: str, events: list[KVEvent]) -> None:
    """Apply one batch in order. Raises IndexUnavailable if the store fails part-way."""
    for event in events:
        if isinstance(event, BlockStored):
            hashes = cast(list[int], list(event.block_hashes))  # published as ints
            await index.add(model, hashes, [PodEntry(pod, tier_of(event.medium))])
        elif isinstance(event, BlockRemoved):
            entry = [PodEntry(pod, tier_of(event.medium))]
            for block_hash in event.block_hashes:
                await index.evict(model, int(block_hash), entry)
        elif isinstance(event, AllBlocksCleared):
            await index.clear_pod(pod)
