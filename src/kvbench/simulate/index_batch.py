"""One engine step's KV events applied to a Redis / Valkey KV-block index in ONE round trip, with
exactly the writes `apply_events` makes one by one (emulator/router/events.py) and in the same
order, so the store ends in the same state. AllBlocksCleared (a key scan) keeps its own path.
Failures take the index's own deadline and circuit breaker (`RedisIndex._run`), as a live apply
does.

The writes run as one server-side script (`EVAL`): every `HSET key field stamp` / `HDEL key field`
of the step, in event order, on the real store. A step of a 10,000-token prompt stores and evicts
hundreds of blocks; as a pipeline of single commands, packing and parsing them costs more
client-side Python than the whole engine step. The script's request is packed by hand (the RESP
`_pipelined_hkeys` also packs) and answers once. A KV-block index store has no maxmemory (see
spec.scenarios.store_maxmemory_bytes), so no write can be refused part-way for memory.
"""

from __future__ import annotations

from kvbench.emulator.engine.interface import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent
from kvbench.emulator.router.events import tier_of
from kvbench.emulator.router.index_memory import PodEntry
from kvbench.emulator.router.index_redis import RedisIndex, rfc3339

# KEYS: every block key of the step, in order. ARGV[1]: the stamp; then per event a triple
# (op "S" store / "R" remove, the holder field, how many of the next KEYS it covers).
# Returns the number of writes made.
APPLY_SCRIPT = b"""local stamp = ARGV[1]
local k = 1
local i = 2
local n = #ARGV
while i <= n do
  local op, field, count = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local last = k + count - 1
  if op == 'S' then
    for j = k, last do redis.call('HSET', KEYS[j], field, stamp) end
  else
    for j = k, last do redis.call('HDEL', KEYS[j], field) end
  end
  k = last + 1
  i = i + 3
end
return k - 1
"""


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


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack_apply(stamp: str, pod: str, model: str, events: list[KVEvent]) -> tuple[bytes, int]:
    """The EVAL request (RESP bytes) for `events`, and how many writes it makes."""
    prefix = model.encode() + b"@"
    keys: list[bytes] = []
    triples: list[bytes] = []
    for event in events:
        if isinstance(event, BlockStored):
            op = b"S"
        elif isinstance(event, BlockRemoved):
            op = b"R"
        else:
            continue
        hashes = event.block_hashes
        if not hashes:
            continue
        field = PodEntry(pod, tier_of(event.medium)).field().encode()
        for block_hash in hashes:
            key = b"%s%d" % (prefix, int(block_hash))
            keys.append(b"$%d\r\n%s\r\n" % (len(key), key))
        triples += (_bulk(op), _bulk(field), _bulk(b"%d" % len(hashes)))
    num_keys = len(keys)
    head = b"*%d\r\n" % (3 + num_keys + 1 + len(triples))
    head += _bulk(b"EVAL") + _bulk(APPLY_SCRIPT) + _bulk(b"%d" % num_keys)
    return b"".join([head, *keys, _bulk(stamp.encode()), *triples]), num_keys


async def _flush(index: RedisIndex, pod: str, model: str, events: list[KVEvent]) -> None:
    if not events:
        return
    packed, num_writes = pack_apply(rfc3339(index.wall_clock()), pod, model, events)
    if not num_writes:
        return

    async def write() -> None:
        pool = index.client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(packed, check_health=False)
            written = await connection.read_response()
        except BaseException:
            await connection.disconnect()  # a reply may be half read: never reuse this connection
            raise
        finally:
            await pool.release(connection)
        if written != num_writes:
            raise RuntimeError(f"index script made {written} of {num_writes} writes")

    await index._run(write)
