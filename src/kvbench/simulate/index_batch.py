"""KV events applied to a Redis / Valkey KV-block index with exactly the writes `apply_events` makes
one by one (emulator/router/events.py), in the same order, so the store is in the same state
whenever it is read. AllBlocksCleared (a key scan) keeps its own path. Failures take the index's
own deadline and circuit breaker (`RedisIndex._run`), as a live apply does.

The writes run as one server-side script (`EVAL`): every `HSET key field stamp` / `HDEL key field`,
in event order, on the real store. A step of a 10,000-token prompt stores and evicts hundreds of
blocks; as a pipeline of single commands, packing and parsing them costs more client-side Python
than the whole engine step. The script's request is packed by hand (the RESP `_pipelined_hkeys`
also packs) and answers once. A KV-block index store has no maxmemory (see
spec.scenarios.store_maxmemory_bytes), so no write can be refused part-way for memory.

`PendingWrites` defers delivered batches until the index is next read (a lookup, a metrics page,
the end of the cell): only reads observe the store, and every read sees every batch delivered
before it, so a read sees what it would after one-by-one applies, while many engine steps' batches
cost one round trip. Each batch keeps the stamp of its delivery time. The one difference is under
store faults: a failed flush loses every batch it carried (each counted as a failed apply), where
live each batch fails or lands on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvbench.emulator.engine.interface import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent
from kvbench.emulator.router.events import tier_of
from kvbench.emulator.router.index_memory import IndexUnavailable, PodEntry
from kvbench.emulator.router.index_redis import RedisIndex, rfc3339
from kvbench.simulate.store_link import StoreLink

# KEYS: every block key, in order. ARGV: per event a quadruple (op "S" store / "R" remove, the
# holder field, the stamp, how many of the next KEYS it covers). Returns the number of writes.
APPLY_SCRIPT = b"""local k = 1
local i = 1
local n = #ARGV
while i <= n do
  local op, field, stamp, count = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local last = k + count - 1
  if op == 'S' then
    for j = k, last do redis.call('HSET', KEYS[j], field, stamp) end
  else
    for j = k, last do redis.call('HDEL', KEYS[j], field) end
  end
  k = last + 1
  i = i + 4
end
return k - 1
"""


@dataclass(frozen=True, slots=True)
class EventBatch:
    """One engine step's events from one pod, stamped when delivered."""

    pod: str
    model: str
    events: list[KVEvent]
    stamp: str  # RFC 3339, the index's wall clock at delivery


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack_apply(batches: list[EventBatch]) -> tuple[bytes, int]:
    """The EVAL request (RESP bytes) for the batches' stores and removals, and how many writes it
    makes. AllBlocksCleared events are not part of it (the caller splits on them)."""
    keys: list[bytes] = []
    quads: list[bytes] = []
    for batch in batches:
        prefix = batch.model.encode() + b"@"
        stamp = _bulk(batch.stamp.encode())
        for event in batch.events:
            if isinstance(event, BlockStored):
                op = b"S"
            elif isinstance(event, BlockRemoved):
                op = b"R"
            else:
                continue
            hashes = event.block_hashes
            if not hashes:
                continue
            field = PodEntry(batch.pod, tier_of(event.medium)).field().encode()
            for block_hash in hashes:
                key = b"%s%d" % (prefix, int(block_hash))
                keys.append(b"$%d\r\n%s\r\n" % (len(key), key))
            quads += (_bulk(op), _bulk(field), stamp, _bulk(b"%d" % len(hashes)))
    num_keys = len(keys)
    head = b"*%d\r\n" % (3 + num_keys + len(quads))
    head += _bulk(b"EVAL") + _bulk(APPLY_SCRIPT) + _bulk(b"%d" % num_keys)
    return b"".join([head, *keys, *quads]), num_keys


async def write_batches(index: RedisIndex, batches: list[EventBatch]) -> None:
    """One round trip for every store / removal of `batches`. Raises IndexUnavailable."""
    packed, num_writes = pack_apply(batches)
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


def write_batches_linked(link: StoreLink, batches: list[EventBatch]) -> None:
    """`write_batches` over a StoreLink (the same request and check). Raises IndexUnavailable."""
    packed, num_writes = pack_apply(batches)
    if not num_writes:
        return

    def check(replies: list) -> None:
        if replies[0] != num_writes:
            raise RuntimeError(f"index script made {replies[0]} of {num_writes} writes")

    link.call(packed, check=check)


async def apply_events_pipelined(
    index: RedisIndex, pod: str, model: str, events: list[KVEvent]
) -> None:
    """One batch applied now. Raises IndexUnavailable if the store fails (the caller counts it,
    as the subscriber does)."""
    pending = PendingWrites(index)
    pending.add(pod, model, events)
    if await pending.flush():
        raise IndexUnavailable(f"{index.name} index: KV-event apply failed")


class PendingWrites:
    """Batches delivered to one Redis / Valkey index and not yet written (see the module doc).
    With a `link`, writes go over it (store_link.py): a flush then suspends only to clear a pod
    (`needs_loop`), which the index's own client does."""

    def __init__(self, index: RedisIndex, link: StoreLink | None = None) -> None:
        self.index = index
        self.link = link
        self._batches: list[EventBatch] = []
        self.round_trips = 0
        self.needs_loop = link is None  # True while a flush would await the index's own client
        self._stamp_second: int | None = None
        self._stamp_text = ""

    def add(self, pod: str, model: str, events: list[KVEvent]) -> None:
        if events:
            self._batches.append(EventBatch(pod, model, events, self._stamp()))
            if any(isinstance(e, AllBlocksCleared) for e in events):
                self.needs_loop = True

    def _stamp(self) -> str:
        """`rfc3339(index.wall_clock())`, formatted once per whole second (it has no finer part)."""
        second = int(self.index.wall_clock())
        if second != self._stamp_second:
            self._stamp_second, self._stamp_text = second, rfc3339(second)
        return self._stamp_text

    def __bool__(self) -> bool:
        return bool(self._batches)

    async def flush(self) -> int:
        """Write every pending batch, in delivery order; returns how many batches were lost to a
        store failure (0 when all landed)."""
        batches, self._batches = self._batches, []
        self.needs_loop = self.link is None
        group: list[EventBatch] = []  # batches (or parts) since the last AllBlocksCleared
        lost = 0
        for batch in batches:
            if not any(isinstance(e, AllBlocksCleared) for e in batch.events):
                group.append(batch)
                continue
            part: list[KVEvent] = []
            for event in batch.events:
                if not isinstance(event, AllBlocksCleared):
                    part.append(event)
                    continue
                group.append(EventBatch(batch.pod, batch.model, part, batch.stamp))
                lost += await self._write(group)
                group, part = [], []
                try:
                    self.round_trips += 1
                    await self.index.clear_pod(batch.pod)
                except IndexUnavailable:
                    lost += 1
            group.append(EventBatch(batch.pod, batch.model, part, batch.stamp))
        lost += await self._write(group)
        return lost

    async def _write(self, group: list[EventBatch]) -> int:
        if not group:
            return 0
        try:
            self.round_trips += 1
            if self.link is None:
                await write_batches(self.index, group)
            else:
                write_batches_linked(self.link, group)
        except IndexUnavailable:
            return len(group)
        return 0
