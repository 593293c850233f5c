"""LMCache's LocalCPUBackend: chunks in host memory, bounded in bytes, LRU (`cache_policy: LRU`).

Contract: entries are keyed by chunk hash and sized in bytes of ONE TP rank (every rank has its own
backend of `max_local_cpu_size`, and ranks are symmetric, so one model stands for all). A put of a
present key is a no-op; a put evicts least-recently-used unpinned entries until the chunk fits and
is refused (False, nothing evicted) when it cannot fit. Lookup pins entries until the request saves
or finishes; a hit on retrieve refreshes recency.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class CPUEntry:
    size_bytes: int
    pins: int = 0


class LocalCPUBackend:
    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.used_bytes = 0
        self.entries: OrderedDict[int, CPUEntry] = OrderedDict()
        self.evicted_total = 0

    def contains(self, chunk_hash: int) -> bool:
        return chunk_hash in self.entries

    def touch(self, chunk_hash: int) -> None:
        if chunk_hash in self.entries:
            self.entries.move_to_end(chunk_hash)

    def pin(self, chunk_hash: int) -> None:
        self.entries[chunk_hash].pins += 1

    def unpin(self, chunk_hash: int) -> None:
        entry = self.entries.get(chunk_hash)
        if entry is not None and entry.pins > 0:
            entry.pins -= 1

    def put(self, chunk_hash: int, size_bytes: int) -> bool:
        if chunk_hash in self.entries:
            return True
        if size_bytes > self.capacity_bytes:
            return False
        victims, freed = [], 0
        for key, entry in self.entries.items():
            if self.used_bytes - freed + size_bytes <= self.capacity_bytes:
                break
            if entry.pins == 0:
                victims.append(key)
                freed += entry.size_bytes
        if self.used_bytes - freed + size_bytes > self.capacity_bytes:
            return False
        for key in victims:
            self.used_bytes -= self.entries.pop(key).size_bytes
        self.evicted_total += len(victims)
        self.entries[chunk_hash] = CPUEntry(size_bytes)
        self.used_bytes += size_bytes
        return True

    def clear_unpinned(self) -> int:
        removed = [key for key, entry in self.entries.items() if entry.pins == 0]
        for key in removed:
            self.used_bytes -= self.entries.pop(key).size_bytes
        return len(removed)

    def usage(self) -> float:
        return self.used_bytes / self.capacity_bytes if self.capacity_bytes else 0.0
