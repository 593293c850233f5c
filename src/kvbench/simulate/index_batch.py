"""One engine step's KV events applied to a Redis / Valkey KV-block index in ONE pipelined round
trip, with exactly the writes `apply_events` makes one by one (emulator/router/events.py) and in
the same order (a non-transactional pipeline runs its commands in order), so the store ends in the
same state. AllBlocksCleared (a key scan) keeps its own path. Failures take the index's own
deadline and circuit breaker (`RedisIndex._run`), as a live apply does.
"""

from __future__ import annotations

from kvbench.emulator.engine.interface import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent
from kvbench.emulator.router.events import tier_of
from kvbench.emulator.router.index_memory import PodEntry
from kvbench.emulator.router.index_redis import RedisIndex, redis_key, rfc3339


async def apply_events_pipelined(
    index: RedisIndex, pod: str, model: str, events: list[KVEvent]
) -> None:
    """Raises IndexUnavailable if the store fails (the caller counts it, as the subscriber does)."""
    pending: list[KVEvent] = []
    for event in events:
        if isinstance(event, AllBlocksCleared):
            await _flush(index, pod, model, pending)
            pending = []
            await index.clear_pod(pod)
        else:
            pending.append(event)
    await _flush(index, pod, model, pending)


async def _flush(index: RedisIndex, pod: str, model: str, events: list[KVEvent]) -> None:
    if not events:
        return
    stamp = rfc3339(index.wall_clock())

    async def write() -> None:
        pipe = index.client.pipeline(transaction=False)
        for event in events:
            field = PodEntry(pod, tier_of(event.medium)).field()  # type: ignore[union-attr]
            if isinstance(event, BlockStored):
                for block_hash in event.block_hashes:
                    pipe.hset(redis_key(model, int(block_hash)), mapping={field: stamp})
            elif isinstance(event, BlockRemoved):
                for block_hash in event.block_hashes:
                    pipe.hdel(redis_key(model, int(block_hash)), field)
        await pipe.execute()

    await index._run(write)
