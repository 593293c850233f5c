"""KV-block index lookups on a Redis / Valkey index over a `StoreLink`, with exactly the answer
`RedisIndex.lookup` gives (emulator/router/index_redis.py) and the same commands.

The live lookup pipelines `HKEYS` per block key, in batches of `lookup_batch_keys`, and keeps the
holders of every key up to the first key with no field. This one sends the same commands, the
first two batches in one write (a prompt of up to two batches of keys costs one round trip): when
a key of the first batch has no field, the second batch's `HKEYS` were sent for nothing (read-only
commands on a store without maxmemory: nothing else changes) and their answers are dropped; only
the client differs: the link parses the replies with hiredis on a blocking socket (a 2,000-token
prompt is ~130 keys: as redis-py replies on an asyncio loop, their Python cost more than the
engine steps of a simulated cell). Keys with the same fields share one holders mapping (the
scorer only reads it). Faults take the index's circuit breaker, as a live lookup (store_link.py).
(A server-side script walking the keys answered the same, but its `redis.call` per key cost the
store ~4 times the pipelined commands' time.)

In virtual time a lookup's wall time does not count (the router's modelled scheduling time does,
router_node.RouterTiming), so only the answer must equal the live one.
"""

from __future__ import annotations

from kvbench.emulator.router.index_memory import Holders, IndexUnavailable, PodEntry
from kvbench.emulator.router.index_redis import RedisIndex
from kvbench.simulate.store_link import StoreLink


def pack_hkeys(keys: list[str]) -> bytes:
    """One `HKEYS key` per key, as RESP (what `RedisIndex._pipelined_hkeys` sends)."""
    return b"".join(
        b"*2\r\n$5\r\nHKEYS\r\n$%d\r\n%s\r\n" % (len(k), k) for k in (key.encode() for key in keys)
    )


def pack_hkeys_of(model: str, hashes: list[int]) -> bytes:
    """`pack_hkeys([redis_key(model, h) for h in hashes])`, each key's bytes formatted at once
    (`b"%d" % h` is `str(h).encode()` for an int)."""
    prefix = f"{model}@".encode()
    width = len(prefix)
    parts = []
    for block_hash in hashes:
        digits = b"%d" % block_hash
        parts.append(
            b"*2\r\n$5\r\nHKEYS\r\n$%d\r\n%s%s\r\n" % (width + len(digits), prefix, digits)
        )
    return b"".join(parts)


def holders_of(fields: list[str]) -> Holders:
    """One key's `<pod>@<tier>` fields as holders (what `RedisIndex._lookup` builds of them)."""
    holders: Holders = {}
    for field in fields:
        pod, _, tier = field.rpartition("@")
        holders.setdefault(pod, set()).add(tier)
    return holders


class LinkedLookupIndex:
    """A `KVBlockIndex` over a `RedisIndex`: lookups on a `StoreLink` (they complete without
    suspending: no asyncio loop needed), everything else the index's own."""

    MAX_PACKED_KEYS = 1 << 17  # commands kept packed (~20 MB; emptied when full, as HashMemo)

    def __init__(self, index: RedisIndex, link: StoreLink) -> None:
        self.index = index
        self.link = link
        self.name = index.name
        # model -> block hash -> its `HKEYS` command, packed (prompts share most of their keys)
        self._packed: dict[str, dict[int, bytes]] = {}

    def _pack(self, model: str, hashes: list[int]) -> bytes:
        """`pack_hkeys_of(model, hashes)`, each key's command packed once."""
        packed = self._packed.get(model)
        if packed is None or len(packed) >= self.MAX_PACKED_KEYS:
            packed = self._packed[model] = {}
        get = packed.get
        parts: list[bytes] = []
        for block_hash in hashes:
            part = get(block_hash)
            if part is None:
                part = packed[block_hash] = pack_hkeys_of(model, [block_hash])
            parts.append(part)
        return b"".join(parts)

    async def lookup(self, model: str, hashes: list[int]) -> list[Holders]:
        index = self.index
        if not hashes:  # the live lookup sends nothing either, but checks the breaker first
            if index.breaker_open():
                raise IndexUnavailable(f"{index.name} index: circuit open")
            return []
        found: list[Holders] = []
        shared: dict[tuple[str, ...], Holders] = {}  # fields -> their holders, read-only
        batch_keys = index.lookup_batch_keys
        # the first two batches in one write (see the module doc), then batch by batch
        starts = [0, *range(2 * batch_keys, len(hashes), batch_keys)]
        ends = [*starts[1:], len(hashes)]
        for start, end in zip(starts, ends):
            batch = hashes[start:end]
            for fields in self.link.call(self._pack(model, batch), len(batch)):
                if not fields:
                    return found
                key = tuple(fields)
                holders = shared.get(key)
                if holders is None:
                    holders = shared[key] = holders_of(fields)
                found.append(holders)
        return found

    async def add(self, model: str, hashes: list[int], entries: list[PodEntry]) -> None:
        await self.index.add(model, hashes, entries)

    async def evict(self, model: str, block_hash: int, entries: list[PodEntry]) -> None:
        await self.index.evict(model, block_hash, entries)

    async def clear_pod(self, pod: str) -> None:
        await self.index.clear_pod(pod)

    async def size(self) -> int:
        return await self.index.size()

    async def close(self) -> None:
        await self.index.close()
