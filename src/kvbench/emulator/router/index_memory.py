"""KV-block index contract and the in-memory backend (llm-d kvblock in_memory.go, v0.4 semantics).

Contract of every backend:
- A key is (model, chunk_hash uint64): the topic's model name and the engine's block hash.
- `add(model, hashes, entries)` records that each entry (pod, tier) holds each block;
  `evict(model, hash, entries)` removes those entries (the key goes when it has none left);
  `clear_pod(pod)` removes the pod from every key (AllBlocksCleared, HEAD semantics).
- `lookup(model, hashes)` returns, in request order, the holders of each key up to (not including)
  the first key that nobody holds: a list of {pod: {tiers}}. The scorer enforces contiguity per pod.
- A backend that cannot answer raises `IndexUnavailable`; callers score 0 and carry on.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol


class IndexUnavailable(RuntimeError):
    """The index store did not answer (down, frozen, or its circuit breaker is open)."""


@dataclass(frozen=True)
class PodEntry:
    pod: str
    tier: str  # lower-case medium: "gpu", "cpu", ...

    def field(self) -> str:
        """llm-d's PodEntry.String(): "<pod>@<tier>"."""
        return f"{self.pod}@{self.tier}"

    @staticmethod
    def from_field(text: str) -> PodEntry:
        pod, _, tier = text.rpartition("@")
        return PodEntry(pod, tier) if pod else PodEntry(text, "gpu")


Holders = dict[str, set[str]]  # pod -> tiers holding one key


class KVBlockIndex(Protocol):
    name: str

    async def lookup(self, model: str, hashes: list[int]) -> list[Holders]: ...

    async def add(self, model: str, hashes: list[int], entries: list[PodEntry]) -> None: ...

    async def evict(self, model: str, block_hash: int, entries: list[PodEntry]) -> None: ...

    async def clear_pod(self, pod: str) -> None: ...

    async def size(self) -> int: ...

    async def close(self) -> None: ...


class InMemoryIndex:
    """Two-level LRU: at most `size` keys, each holding at most `pod_cache_size` pod entries
    (llm-d defaults 1e8 and 10). Lookups refresh a key's recency, as golang-lru's Get does."""

    name = "memory"

    def __init__(self, size: int = 100_000_000, pod_cache_size: int = 10) -> None:
        self.max_keys = max(1, size)
        self.pod_cache_size = max(1, pod_cache_size)
        self._keys: OrderedDict[tuple[str, int], OrderedDict[PodEntry, None]] = OrderedDict()

    async def lookup(self, model: str, hashes: list[int]) -> list[Holders]:
        found: list[Holders] = []
        for block_hash in hashes:
            entries = self._keys.get((model, block_hash))
            if not entries:
                break
            self._keys.move_to_end((model, block_hash))
            holders: Holders = {}
            for entry in entries:
                holders.setdefault(entry.pod, set()).add(entry.tier)
            found.append(holders)
        return found

    async def add(self, model: str, hashes: list[int], entries: list[PodEntry]) -> None:
        for block_hash in hashes:
            key = (model, block_hash)
            pods = self._keys.get(key)
            if pods is None:
                pods = self._keys[key] = OrderedDict()
            self._keys.move_to_end(key)
            for entry in entries:
                pods[entry] = None
                pods.move_to_end(entry)
            while len(pods) > self.pod_cache_size:
                pods.popitem(last=False)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)

    async def evict(self, model: str, block_hash: int, entries: list[PodEntry]) -> None:
        key = (model, block_hash)
        pods = self._keys.get(key)
        if pods is None:
            return
        for entry in entries:
            pods.pop(entry, None)
        if not pods:
            del self._keys[key]

    async def clear_pod(self, pod: str) -> None:
        for key in list(self._keys):
            pods = self._keys[key]
            for entry in [e for e in pods if e.pod == pod]:
                del pods[entry]
            if not pods:
                del self._keys[key]

    async def size(self) -> int:
        return len(self._keys)

    async def close(self) -> None:
        pass
