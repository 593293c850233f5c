"""KV-block index lookups on a Redis / Valkey index in one server-side script, with exactly the
answer `RedisIndex.lookup` gives (emulator/router/index_redis.py).

The live lookup pipelines `HKEYS` per block key (batches of `lookup_batch_keys`) and keeps the
holders of every key up to the first key with no field. A 2,000-token prompt is ~130 keys: as
single replies, redis-py parses each one in Python, which cost more than the engine steps of a
simulated cell. `SCRIPT` walks the same keys in order on the server and stops at the same first
empty key, so one nested reply (parsed by hiredis at once) carries the same fields. The store is
only written between lookups (the router flushes pending KV-event writes before it schedules,
router_node.py), so reading all keys in one script sees the same state as the pipelined batches.
Faults take the index's own deadline and circuit breaker (`RedisIndex._run`), as a live lookup.

In virtual time a lookup's wall time does not count (the router's modelled scheduling time does,
router_node.RouterTiming), so only the answer must equal the live one.
"""

from __future__ import annotations

from kvbench.emulator.router.index_memory import Holders, PodEntry
from kvbench.emulator.router.index_redis import RedisIndex, redis_key

# KEYS: the block keys in prompt order. Returns the HKEYS of each key up to the first empty one.
SCRIPT = b"""local out = {}
for i = 1, #KEYS do
  local fields = redis.call('HKEYS', KEYS[i])
  if #fields == 0 then break end
  out[i] = fields
end
return out
"""


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack_lookup(keys: list[str]) -> bytes:
    """The EVAL request (RESP bytes) of SCRIPT over `keys`."""
    parts = [b"*%d\r\n" % (3 + len(keys)), _bulk(b"EVAL"), _bulk(SCRIPT), _bulk(b"%d" % len(keys))]
    parts.extend(_bulk(key.encode()) for key in keys)
    return b"".join(parts)


def holders_of(fields: list[str]) -> Holders:
    """One key's `<pod>@<tier>` fields as holders (what `RedisIndex._lookup` builds of them)."""
    holders: Holders = {}
    for field in fields:
        pod, _, tier = field.rpartition("@")
        holders.setdefault(pod, set()).add(tier)
    return holders


class ScriptedLookupIndex:
    """A `KVBlockIndex` over a `RedisIndex`: lookups by SCRIPT, everything else the index's own."""

    def __init__(self, index: RedisIndex) -> None:
        self.index = index
        self.name = index.name

    async def lookup(self, model: str, hashes: list[int]) -> list[Holders]:
        packed = pack_lookup([redis_key(model, h) for h in hashes])
        return await self.index._run(lambda: self._lookup(packed, bool(hashes)))

    async def _lookup(self, packed: bytes, any_keys: bool) -> list[Holders]:
        if not any_keys:
            return []  # the live lookup sends nothing either (but checks the breaker first)
        pool = self.index.client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(packed, check_health=False)
            reply = await connection.read_response()
        except BaseException:
            await connection.disconnect()  # a reply may be half read: never reuse this connection
            raise
        finally:
            await pool.release(connection)
        return [holders_of(fields) for fields in reply]

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
