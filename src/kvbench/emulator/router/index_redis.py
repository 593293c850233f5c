"""Redis / Valkey backend of the KV-block index, in llm-d kv-cache-manager v0.4's key layout.

Layout (pkg/kvcache/kvblock/redis.go + index.go, v0.4): one HASH per key named
`<model>@<chunk_hash as decimal uint64>`; one field per holder `"<pod>@<tier>"`, its value the time
of the last store in RFC 3339 (Go's time.RFC3339). Lookup pipelines `HKEYS` per key (in batches of
`lookup_batch_keys`, so a short hit on a long prompt costs one round trip) and stops at the first
key with no field. Valkey speaks the same protocol: `valkey://` is rewritten to `redis://` and a
bare `host:port` gets `redis://`, as llm-d does.

Faults: every operation runs under a short deadline (`socket_timeout_s`, 200 ms); a failure opens a
circuit breaker for `breaker_open_s`, during which calls raise `IndexUnavailable` at once (the
scorer then scores 0). Connections come from a small blocking pool (8).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from kvbench.emulator.router.index_memory import Holders, IndexUnavailable, PodEntry


def normalize_address(address: str) -> str:
    if address.startswith("valkey://"):
        return "redis://" + address[len("valkey://") :]
    if address.startswith("valkeys://"):
        return "rediss://" + address[len("valkeys://") :]
    if address.startswith(("redis://", "rediss://", "unix://")):
        return address
    return "redis://" + address


def redis_key(model: str, block_hash: int) -> str:
    return f"{model}@{block_hash}"


def rfc3339(wall_s: float) -> str:
    stamp = datetime.datetime.fromtimestamp(int(wall_s), tz=datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


class RedisIndex:
    def __init__(
        self,
        address: str,
        backend_type: str = "redis",
        socket_timeout_s: float = 0.2,
        breaker_open_s: float = 1.0,
        lookup_batch_keys: int = 128,
        max_connections: int = 8,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = backend_type
        self.url = normalize_address(address)
        self.breaker_open_s = breaker_open_s
        self.clear_timeout_s = 10.0  # AllBlocksCleared scans every key: rare, and slower
        self.lookup_batch_keys = lookup_batch_keys
        self.clock = clock
        self.wall_clock = wall_clock
        self._open_until_s = 0.0
        # A small bounded pool: a burst of lookups waits (up to the socket timeout) for a connection
        # instead of opening hundreds, each costing a handshake.
        # No per-read socket timeout: each operation runs under one deadline (`_run`), which costs
        # one timer instead of one per reply (a 32-key lookup reads 32 replies).
        self.timeout_s = socket_timeout_s
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=max_connections,
            timeout=socket_timeout_s,
            socket_timeout=None,
            socket_connect_timeout=socket_timeout_s,
            decode_responses=True,
            retry_on_timeout=False,
        )
        self.client = aioredis.Redis(connection_pool=pool)

    def breaker_open(self) -> bool:
        return self.clock() < self._open_until_s

    async def _run(self, coroutine_factory, timeout_s: float | None = None):
        if self.breaker_open():
            raise IndexUnavailable(f"{self.name} index: circuit open")
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                return await coroutine_factory()
        except Exception as err:  # noqa: BLE001  (any store failure must degrade to "no prediction")
            # Only the failed connection is dropped (redis-py and _pipelined_hkeys disconnect it);
            # connections other requests are using stay untouched.
            self._open_until_s = self.clock() + self.breaker_open_s
            raise IndexUnavailable(f"{self.name} index: {type(err).__name__}: {err}") from err

    async def lookup(self, model: str, hashes: list[int]) -> list[Holders]:
        return await self._run(lambda: self._lookup(model, hashes))

    async def _lookup(self, model: str, hashes: list[int]) -> list[Holders]:
        found: list[Holders] = []
        for start in range(0, len(hashes), self.lookup_batch_keys):
            batch = hashes[start : start + self.lookup_batch_keys]
            for fields in await self._pipelined_hkeys([redis_key(model, h) for h in batch]):
                if not fields:
                    return found
                holders: Holders = {}
                for field in fields:
                    pod, _, tier = field.rpartition("@")
                    holders.setdefault(pod, set()).add(tier)
                found.append(holders)
        return found

    async def _pipelined_hkeys(self, keys: list[str]) -> list[list[str]]:
        """One write of every `HKEYS key` (RESP packed by hand), then one reply per key: the same
        pipeline redis-py's Pipeline sends, without its per-command Python overhead (the hot path
        of a 10,000-token prompt is 625 keys)."""
        packed = b"".join(
            b"*2\r\n$5\r\nHKEYS\r\n$%d\r\n%s\r\n" % (len(k), k)
            for k in (key.encode() for key in keys)
        )
        pool = self.client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(packed, check_health=False)
            return [await connection.read_response() for _ in keys]
        except BaseException:
            await connection.disconnect()  # replies may be half read: never reuse this connection
            raise
        finally:
            await pool.release(connection)

    async def add(self, model: str, hashes: list[int], entries: list[PodEntry]) -> None:
        if not hashes or not entries:
            return
        stamp = rfc3339(self.wall_clock())

        async def _add():
            pipe = self.client.pipeline(transaction=False)
            for block_hash in hashes:
                pipe.hset(redis_key(model, block_hash), mapping={e.field(): stamp for e in entries})
            await pipe.execute()

        await self._run(_add)

    async def evict(self, model: str, block_hash: int, entries: list[PodEntry]) -> None:
        if entries:
            await self._run(
                lambda: self.client.hdel(
                    redis_key(model, block_hash), *[e.field() for e in entries]
                )
            )

    async def clear_pod(self, pod: str) -> None:
        await self._run(lambda: self._clear_pod(pod), timeout_s=self.clear_timeout_s)

    async def _clear_pod(self, pod: str) -> None:
        async for key in self.client.scan_iter(match="*@*", count=1000):
            fields = [
                f
                for f in await self.client.hkeys(key)
                if PodEntry.from_field(f if isinstance(f, str) else f.decode()).pod == pod
            ]
            if fields:
                await self.client.hdel(key, *fields)

    async def size(self) -> int:
        return await self._run(self.client.dbsize)

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()
