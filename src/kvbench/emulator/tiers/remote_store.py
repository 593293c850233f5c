"""LMCache's remote tier on a real Redis or Valkey server, with LMCache 0.3.9's key layout.

Layout (connector/redis_connector.py, valkey_connector.py):
- redis://  two plain keys per chunk and rank: `<key>kv_bytes` (raw KV bytes) and `<key>metadata`
  (28 bytes, struct "iiiiiii": length, fmt, dtype, shape[0..3]); existence is EXISTS <key>metadata;
  a get reads metadata then kv_bytes, and deletes a metadata key whose kv_bytes was evicted.
- valkey:// the same with a ':' separator (`<key>:kv_bytes`, `<key>:metadata`), read with MGET.
Writes set kv_bytes before metadata. No TTL: eviction is the server's maxmemory policy.

Access is synchronous from the engine step (the engine is single-threaded): each batch is ONE
pipelined round trip with a short socket timeout and no client retries. Faults: any connection error
or timeout counts an error, drops the connection and opens a circuit breaker; while it is open every
operation answers "unavailable" at once (lookups become misses, writes are dropped) and the next try
is made `retry_interval_s` of engine time later, so a dead store is not hammered every step.
An error reply (e.g. OOM: maxmemory reached with nothing left to evict) fails that operation and
counts an error, but the connection is sound, so it opens no breaker. Eviction itself is silent.
`elapsed_s` of every operation is the measured wall time of the real round trip (timer passed in).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

MEMORY_FORMAT_KV_2LTD = 1  # lmcache MemoryFormat: [2, num_layers, num_tokens, hidden_dim]
DTYPE_TO_INT = {"float16": 2, "bfloat16": 3, "float32": 4, "float8_e4m3fn": 7, "float8_e5m2": 8}
_FAULTS = (redis.ConnectionError, redis.TimeoutError, OSError)


def pack_metadata(length: int, shape: Sequence[int], dtype: str) -> bytes:
    return struct.pack("iiiiiii", length, MEMORY_FORMAT_KV_2LTD, DTYPE_TO_INT[dtype], *shape)


def unpack_metadata(raw: bytes) -> tuple[int, int, int, tuple[int, int, int, int]]:
    length, fmt, dtype, *shape = struct.unpack("iiiiiii", raw)
    return length, fmt, dtype, tuple(shape)


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    key: str  # CacheEngineKey string
    payload: bytes
    metadata: bytes


@dataclass(slots=True)
class RemoteResult:
    ok: bool  # False: store unavailable (error now, or breaker open)
    elapsed_s: float
    values: list = field(default_factory=list)
    skipped: bool = False  # True: not tried, the breaker is open


class RemoteKVStore:
    def __init__(
        self,
        url: str,
        timeout_s: float,
        retry_interval_s: float,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        parsed = urlparse(url)
        self.scheme = parsed.scheme
        self.separator = ":" if self.scheme == "valkey" else ""
        self.retry_interval_s = retry_interval_s
        self._timer = timer
        self._client = redis.Redis(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 6379,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._retry_at_s: float | None = None  # breaker open until this engine time
        self.errors_total = 0
        self.ops_total = 0

    def kv_key(self, key: str) -> str:
        return f"{key}{self.separator}kv_bytes"

    def metadata_key(self, key: str) -> str:
        return f"{key}{self.separator}metadata"

    @property
    def breaker_open(self) -> bool:
        return self._retry_at_s is not None

    def available(self, now_s: float) -> bool:
        return self._retry_at_s is None or now_s >= self._retry_at_s

    def _run(self, now_s: float, fill: Callable[[redis.client.Pipeline], object]) -> RemoteResult:
        if not self.available(now_s):
            return RemoteResult(False, 0.0, skipped=True)
        start = self._timer()
        try:
            pipe = self._client.pipeline(transaction=False)
            fill(pipe)
            values = pipe.execute()
        except redis.ResponseError:  # the server answered with an error; the connection is fine
            self.errors_total += 1
            return RemoteResult(False, self._timer() - start)
        except _FAULTS:
            self.errors_total += 1
            self._retry_at_s = now_s + self.retry_interval_s
            self._client.connection_pool.disconnect()
            return RemoteResult(False, self._timer() - start)
        self._retry_at_s = None
        self.ops_total += 1
        return RemoteResult(True, self._timer() - start, values)

    def exists(self, keys: Sequence[str], now_s: float) -> RemoteResult:
        """values[i]: whether keys[i]'s metadata key exists."""
        result = self._run(now_s, lambda pipe: [pipe.exists(self.metadata_key(k)) for k in keys])
        result.values = [bool(v) for v in result.values]
        return result

    def put(self, entries: Sequence[RemoteEntry], now_s: float) -> RemoteResult:
        def fill(pipe) -> None:
            for entry in entries:
                pipe.set(self.kv_key(entry.key), entry.payload)
                pipe.set(self.metadata_key(entry.key), entry.metadata)

        return self._run(now_s, fill)

    def get(self, keys: Sequence[str], now_s: float) -> RemoteResult:
        """values[i]: keys[i]'s payload bytes, or None when missing (a dangling metadata is deleted)."""
        if self.scheme == "valkey":
            result = self._run(
                now_s, lambda pipe: [pipe.mget(self.kv_key(k), self.metadata_key(k)) for k in keys]
            )
            pairs = [(kv, meta) for kv, meta in result.values]
        else:

            def fill(pipe) -> None:
                for k in keys:
                    pipe.get(self.metadata_key(k))
                    pipe.get(self.kv_key(k))

            result = self._run(now_s, fill)
            pairs = [
                (result.values[i + 1], result.values[i]) for i in range(0, len(result.values), 2)
            ]
        dangling = [k for k, (kv, meta) in zip(keys, pairs) if meta is not None and kv is None]
        if dangling:
            self._run(now_s, lambda pipe: [pipe.delete(self.metadata_key(k)) for k in dangling])
        result.values = [kv if meta is not None else None for kv, meta in pairs]
        return result

    def close(self) -> None:
        self._client.close()
