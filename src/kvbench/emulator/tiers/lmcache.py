"""LMCacheConnectorV1 (lmcache 0.3.9.post2 with vLLM 0.11): local CPU tier + optional Redis/Valkey.

Per request (kv-semantics.md section 3):
1. lookup: chunk keys of the prompt (prefix-chained 256-token chunks, the partial tail too), hits
   counted consecutively from the start, CPU tier first, then the remote tier for the rest in ONE
   pipelined round trip; CPU hits are pinned until the request saves or finishes.
   need = hit - vllm_cached, minus 1 when the whole prompt hits; returned with load_async=False.
2. retrieve (update_state_after_alloc): synchronous, so it blocks the step: whole chunks from the
   chunk holding the first needed token, CPU->GPU over the host link; remote chunks are first read
   from the real store (measured round trip + true bytes / network bandwidth) and written back to
   the CPU tier.
3. store (build_step, after the forward pass): `input_len // chunk * chunk` tokens, or all of them
   on the last prefill step when `save_unfull_chunk`; chunks already on CPU (or found in any tier by
   the request's lookup) are skipped; decode is
   saved only with `save_decode_cache`. GPU->CPU copies block the step. The remote write is
   asynchronous in LMCache's API, but its work (serialising 29 MB chunks, the store server taking
   them) competes with the engine's: on the H200 (LMCache 0.5.6, Redis on loopback) a cold
   prompt's second token came ~0.6 s after its first with the Redis tier, ~0.1 s with the CPU tier
   alone, and output tok/s fell 37 %. So the write's real round trip plus the true bytes' time
   (network, and CostParams.lmcache_remote_bytes_per_s where calibrated) holds the step.
Calibrated costs (CostParams.lmcache_*, 0 = off): the copy rate (LMCache's own gather/scatter,
far below the host link on its torch path), Python work per chunk moved and per request scheduled
in a step.
Tensor parallelism: each rank stores its 1/tp share under its own key (worker_id = rank,
world_size = tp). Remote payloads are `remote_payload_scale` of the true bytes (metadata `length`
is the stored length, `shape` the true shape); costs always use the true bytes.
Emulation gaps: the retrieve after a whole-prompt hit is costed as if every hit chunk loads; a remote
chunk that vanished between lookup and retrieve is counted (kvbench:lmcache_remote_load_misses) but
not recomputed.
Metrics: LMCache's counters (`lmcache:num_hit_tokens` ...) keyed with `_total` (the API layer renders
`*_total` keys as counters, exposed as prometheus_client exposes LMCache's), `lmcache:local_cache_usage`
(bytes), and kvbench's remote-tier counters and gauges (errors, skipped tries, payload scale).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from kvbench.emulator.engine.connector import (
    ConnectorFacts,
    ConnectorPoll,
    ConnectorRequest,
    ScheduledChunk,
    StepTransfer,
)
from kvbench.emulator.engine.interface import KVEvent, TierHits
from kvbench.emulator.tiers.lmcache_config import LMCacheConfig
from kvbench.emulator.tiers.lmcache_cpu import LocalCPUBackend
from kvbench.emulator.tiers.lmcache_keys import Chunk, ChunkedTokenDatabase, KeyFormat
from kvbench.emulator.tiers.remote_store import (
    RemoteEntry,
    RemoteKVStore,
    RemoteResult,
    pack_metadata,
)
from kvbench.emulator.tiers.transfer import HostLink, kv_bytes_per_rank

CPU, REMOTE = "cpu", "remote"
# LMCache's valkey:// connector is another client than its redis:// one: it splits a batch of puts
# or gets over a pool of worker threads, each with its own pipelined connection (LMCache 0.5.6 logs
# "ValkeyWorkerPool: 8 threads"); the redis:// connector sends one command at a time. So a valkey
# batch's transfer time is spread over up to this many streams.
VALKEY_WORKER_THREADS = 8
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1, "float8_e5m2": 1}


@dataclass(slots=True)
class RequestState:
    hit_chunks: list[Chunk] = field(default_factory=list)
    hit_tiers: list[str] = field(default_factory=list)
    pinned: list[int] = field(default_factory=list)  # CPU chunk hashes pinned by the lookup
    num_local_hit_tokens: int = 0
    num_saved_tokens: int = 0
    hits: TierHits = field(default_factory=TierHits)


def _overlap(chunk: Chunk, start: int, end: int) -> int:
    return max(0, min(chunk.end, end) - max(chunk.start, start))


@dataclass(frozen=True, slots=True)
class SavedChunks:
    """What one store of a request's new chunks did."""

    tokens: int = 0  # tokens copied GPU->CPU
    chunks: int = 0  # chunks saved
    remote_s: float = 0.0  # the remote tier's put, which the step waits for


class LMCacheConnector:
    def __init__(
        self,
        config: LMCacheConfig,
        facts: ConnectorFacts,
        init_hash: int,
        remote: RemoteKVStore | None = None,
        num_layers: int = 1,
    ) -> None:
        self.config = config
        self.facts = facts
        self.token_db = ChunkedTokenDatabase(config.chunk_size, config.save_unfull_chunk, init_hash)
        self.key_format = KeyFormat(facts.model_name, facts.tensor_parallel_size, facts.kv_dtype)
        self.cpu = LocalCPUBackend(config.max_local_cpu_bytes)
        self.remote = remote
        self.num_layers = num_layers
        # Only its durations: LMCache's copies are synchronous (they hold the step). Its own copy
        # rate where calibrated (CostParams.lmcache_copy_bytes_per_s), else the host link's.
        self.link = HostLink(facts.lmcache_copy_bytes_per_s or facts.host_link_bytes_per_s)
        self.chunk_overhead_s = facts.lmcache_chunk_overhead_s
        self.per_request_overhead_s = facts.lmcache_per_request_overhead_s
        self.remote_store_bytes_per_s = facts.lmcache_remote_bytes_per_s
        self.remote_streams = (
            VALKEY_WORKER_THREADS if remote is not None and remote.scheme == "valkey" else 1
        )
        self._states: dict[str, RequestState] = {}
        self._pending = StepTransfer()
        self._counters: dict[str, float] = defaultdict(float)

    # ---- sizes and keys

    def _rank_bytes(self, num_tokens: int) -> int:
        return kv_bytes_per_rank(
            num_tokens, self.facts.kv_bytes_per_token, self.facts.tensor_parallel_size
        )

    def rank_keys(self, chunk: Chunk) -> list[str]:
        return [
            self.key_format.key(rank, chunk.chunk_hash)
            for rank in range(self.facts.tensor_parallel_size)
        ]

    def _shape(self, num_tokens: int) -> tuple[int, int, int, int]:
        per_token_rank = self.facts.kv_bytes_per_token // self.facts.tensor_parallel_size
        hidden = per_token_rank // (2 * self.num_layers * _DTYPE_BYTES.get(self.facts.kv_dtype, 2))
        return (2, self.num_layers, num_tokens, hidden)

    # ---- lookup

    def _lookup_chunks(self, chunks: list[Chunk], now_s: float) -> list[str]:
        tiers: list[str] = []
        for chunk in chunks:
            if not self.cpu.contains(chunk.chunk_hash):
                break
            tiers.append(CPU)
        rest = chunks[len(tiers) :]
        if rest and self.remote is not None:
            tp = self.facts.tensor_parallel_size
            result = self.remote.exists([k for c in rest for k in self.rank_keys(c)], now_s)
            self._account_remote("lookup", result)
            for i in range(len(rest) if result.ok else 0):
                if not all(result.values[i * tp : (i + 1) * tp]):
                    break
                tiers.append(REMOTE)
        return tiers

    def get_num_new_matched_tokens(
        self, request: ConnectorRequest, num_local_hit_tokens: int, now_s: float
    ) -> tuple[int, bool]:
        state = self._states.setdefault(request.request_id, RequestState())
        self._release_pins(state)
        prompt = list(request.all_token_ids[: request.num_prompt_tokens])
        chunks = self.token_db.chunks(prompt)
        tiers = self._lookup_chunks(chunks, now_s)
        state.hit_chunks, state.hit_tiers = chunks[: len(tiers)], tiers
        state.pinned = [c.chunk_hash for c, tier in zip(state.hit_chunks, tiers) if tier == CPU]
        for chunk_hash in state.pinned:
            self.cpu.pin(chunk_hash)
        state.num_local_hit_tokens = num_local_hit_tokens
        hit_tokens = state.hit_chunks[-1].end if state.hit_chunks else 0
        self._counters["lmcache:num_lookup_requests_total"] += 1
        self._counters["lmcache:num_lookup_tokens_total"] += len(prompt)
        self._counters["lmcache:num_lookup_hits_total"] += hit_tokens
        if hit_tokens == len(request.all_token_ids):
            hit_tokens -= 1  # vLLM must compute the last token itself
        need = hit_tokens - num_local_hit_tokens
        return (need, False) if need > 0 else (0, False)

    # ---- retrieve

    def update_state_after_alloc(
        self,
        request: ConnectorRequest,
        block_ids: list[int],
        num_external_tokens: int,
        now_s: float,
    ) -> None:
        state = self._states.get(request.request_id)
        if state is None or num_external_tokens <= 0:
            return
        load_start = state.num_local_hit_tokens
        load_end = load_start + num_external_tokens
        aligned_start = load_start // self.config.chunk_size * self.config.chunk_size
        hits, moved_tokens, moved_chunks, remote_chunks = TierHits(), 0, 0, []
        for chunk, tier in zip(state.hit_chunks, state.hit_tiers):
            needed = _overlap(chunk, load_start, load_end)
            if needed == 0:
                continue
            moved_tokens += _overlap(chunk, aligned_start, load_end)
            moved_chunks += 1
            if tier == CPU:
                hits.cpu_tokens += needed
                self.cpu.touch(chunk.chunk_hash)
            else:
                hits.remote_tokens += needed
                remote_chunks.append(chunk)
        blocking_s = (
            self.link.duration_s(self._rank_bytes(moved_tokens))
            + self.chunk_overhead_s * moved_chunks
        )
        if remote_chunks:
            blocking_s += self._read_remote(remote_chunks, now_s)
        state.hits = hits
        self._pending.blocking_s += blocking_s
        self._pending.loaded_bytes += (
            self._rank_bytes(moved_tokens) * self.facts.tensor_parallel_size
        )
        self._counters["lmcache:num_retrieve_requests_total"] += 1
        self._counters["lmcache:num_requested_tokens_total"] += request.num_prompt_tokens
        self._counters["lmcache:num_hit_tokens_total"] += num_external_tokens

    def _read_remote(self, chunks: list[Chunk], now_s: float) -> float:
        """Real GETs of every rank's keys, write-back to CPU; returns the seconds the step waits."""
        assert self.remote is not None  # a remote tier is configured
        keys = [k for c in chunks for k in self.rank_keys(c)]
        result = self.remote.get(keys, now_s)
        self._account_remote("get", result)
        true_bytes = self._true_bytes(chunks)
        tp = self.facts.tensor_parallel_size
        for i, chunk in enumerate(chunks):
            present = result.ok and all(v is not None for v in result.values[i * tp : (i + 1) * tp])
            if not present:
                self._counters["kvbench:lmcache_remote_load_misses_total"] += 1
            elif self.config.local_cpu:
                self.cpu.put(chunk.chunk_hash, self._rank_bytes(chunk.num_tokens))
        if result.ok:
            self._counters["lmcache:num_remote_read_requests_total"] += len(keys)
            self._counters["lmcache:num_remote_read_bytes_total"] += true_bytes
        return result.elapsed_s + self._remote_transfer_s(true_bytes, len(chunks))

    def _true_bytes(self, chunks: list[Chunk]) -> int:
        """The chunks' KV bytes over every rank (what a remote transfer costs, not the payload)."""
        return sum(self._rank_bytes(c.num_tokens) for c in chunks) * self.facts.tensor_parallel_size

    def _remote_transfer_s(self, true_bytes: int, num_chunks: int) -> float:
        """The true (unscaled) bytes' time on the way to or from the store: the network's, plus
        the store path's own where calibrated (CostParams.lmcache_remote_bytes_per_s, one
        stream's), spread over the connector's streams (one per chunk at most)."""
        seconds = true_bytes / self.config.remote_network_bytes_per_s
        if self.remote_store_bytes_per_s > 0:
            seconds += true_bytes / self.remote_store_bytes_per_s
        return seconds / max(1, min(self.remote_streams, num_chunks))

    # ---- store

    def build_step(self, scheduled: list[ScheduledChunk], now_s: float) -> StepTransfer:
        step, self._pending = self._pending, StepTransfer()
        step.blocking_s += self.per_request_overhead_s * len(scheduled)
        for chunk in scheduled:
            saved = self._save(chunk, now_s)
            step.stored_bytes += self._rank_bytes(saved.tokens) * self.facts.tensor_parallel_size
            step.blocking_s += (
                self.link.duration_s(self._rank_bytes(saved.tokens))
                + self.chunk_overhead_s * saved.chunks
                + saved.remote_s
            )
        return step

    def _save_upto(self, chunk: ScheduledChunk) -> int:
        request, cs = chunk.request, self.config.chunk_size
        input_len = chunk.num_computed_tokens + chunk.num_scheduled_tokens
        if chunk.num_computed_tokens >= request.num_prompt_tokens:  # decode
            return input_len // cs * cs if self.config.save_decode_cache else 0
        if input_len >= request.num_prompt_tokens and self.config.save_unfull_chunk:
            return input_len
        return input_len // cs * cs

    def _save(self, chunk: ScheduledChunk, now_s: float) -> SavedChunks:
        """Saves the request's new chunks (to the CPU tier, and the remote one if any)."""
        request = chunk.request
        state = self._states.setdefault(request.request_id, RequestState())
        upto = self._save_upto(chunk)
        if upto <= state.num_saved_tokens:
            return SavedChunks()
        first = state.num_saved_tokens // self.config.chunk_size
        new_chunks = self.token_db.chunks(list(request.all_token_ids[:upto]))[first:]
        state.num_saved_tokens = upto
        self._release_pins(state)
        # already saved: on CPU now, or found in any tier by this request's lookup (no extra round trip)
        found = {c.chunk_hash for c in state.hit_chunks}
        to_save = [
            c
            for c in new_chunks
            if not self.cpu.contains(c.chunk_hash) and c.chunk_hash not in found
        ]
        if not to_save:
            return SavedChunks()
        if self.config.local_cpu:
            for c in to_save:
                if not self.cpu.put(c.chunk_hash, self._rank_bytes(c.num_tokens)):
                    self._counters["kvbench:lmcache_cpu_put_refused_total"] += 1
        remote_s = self._write_remote(to_save, now_s) if self.remote is not None else 0.0
        saved_tokens = sum(c.num_tokens for c in to_save)
        self._counters["lmcache:num_store_requests_total"] += 1
        self._counters["lmcache:num_stored_tokens_total"] += saved_tokens
        return SavedChunks(saved_tokens, len(to_save), remote_s)

    def _write_remote(self, chunks: list[Chunk], now_s: float) -> float:
        """Real SETs of every rank's keys; returns the seconds the step waits (LMCache's store
        holds the step: on the H200 a cold prompt's second token came ~0.6 s after its first
        with a Redis tier, ~0.1 s with the CPU tier alone)."""
        assert self.remote is not None  # a remote tier is configured
        entries: list[RemoteEntry] = []
        for c in chunks:
            payload = bytes(
                max(1, int(self._rank_bytes(c.num_tokens) * self.config.remote_payload_scale))
            )
            metadata = pack_metadata(len(payload), self._shape(c.num_tokens), self.facts.kv_dtype)
            entries.extend(RemoteEntry(key, payload, metadata) for key in self.rank_keys(c))
        result = self.remote.put(entries, now_s)
        self._account_remote("put", result)
        true_bytes = self._true_bytes(chunks)
        if result.ok:
            self._counters["lmcache:num_remote_write_requests_total"] += len(entries)
            self._counters["lmcache:num_remote_write_bytes_total"] += true_bytes
            self._counters["kvbench:lmcache_remote_payload_bytes_total"] += sum(
                len(e.payload) for e in entries
            )
        transfer_s = self._remote_transfer_s(true_bytes, len(chunks)) if result.ok else 0.0
        return result.elapsed_s + transfer_s

    # ---- remote accounting

    def _account_remote(self, op: str, result: RemoteResult) -> None:
        self._counters[f"kvbench:lmcache_remote_seconds_total|op={op}"] += result.elapsed_s
        if result.skipped:
            self._counters[f"kvbench:lmcache_remote_skipped_total|op={op}"] += 1
        elif not result.ok:
            self._counters[f"kvbench:lmcache_remote_errors_total|op={op}"] += 1

    # ---- lifecycle

    def _release_pins(self, state: RequestState) -> None:
        for chunk_hash in state.pinned:
            self.cpu.unpin(chunk_hash)
        state.pinned = []

    def request_finished(
        self, request: ConnectorRequest, block_ids: list[int], now_s: float
    ) -> bool:
        state = self._states.pop(request.request_id, None)
        if state is not None:
            self._release_pins(state)
        return False  # stores are synchronous: nothing is still reading the GPU blocks

    def poll(self, now_s: float) -> ConnectorPoll:
        return ConnectorPoll()

    def external_hits(self, request_id: str) -> TierHits:
        state = self._states.get(request_id)
        return state.hits if state is not None else TierHits()

    def take_events(self) -> list[KVEvent]:
        return []  # LMCacheConnectorV1.take_events appears in vLLM 0.13; 0.11 publishes none

    def reset(self) -> None:
        self.cpu.clear_unpinned()

    def metrics(self) -> dict[str, float]:
        out = dict(self._counters)
        for name in ("lookup", "get", "put"):
            out.setdefault(f"kvbench:lmcache_remote_errors_total|op={name}", 0.0)
        out["lmcache:local_cache_usage"] = float(self.cpu.used_bytes)
        out["kvbench:cpu_kv_cache_usage_perc|tier=cpu"] = self.cpu.usage()
        out["kvbench:lmcache_cpu_evicted_chunks_total"] = float(self.cpu.evicted_total)
        if self.remote is not None:
            out["kvbench:lmcache_remote_payload_scale"] = self.config.remote_payload_scale
            out["kvbench:lmcache_remote_available"] = 0.0 if self.remote.breaker_open else 1.0
        return out
