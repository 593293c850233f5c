"""vLLM's native CPU offload (OffloadingConnector, scheduler side + an emulated async worker).

Behaviour (kv-semantics.md section 2, vLLM 0.11.2 unless noted):
- An offload block of `factor` GPU blocks is keyed by the hash of its LAST GPU block.
- Lookup touches every offload block of the request, then counts consecutive ready blocks from
  `num_local_hit // offload_bs`; it returns the tokens beyond the GPU hit with load_async=True, or
  (0, False) when less than one offload block would be loaded.
- Write-through: every step, each scheduled request's new full offload blocks (prompt, decode and
  GPU-hit blocks alike) go to `prepare_store`, which skips blocks already on CPU and evicts
  unreferenced ready blocks. When room cannot be made the store is skipped and retried next step
  (0.11.2+ `continue` semantics; 0.11.0 `break`s out of the step's loop instead).
- Transfers are asynchronous: each is queued on its direction's host link (bytes of one rank /
  bandwidth) and overlaps compute. A load parks the request until `poll` reports it; blocks with a
  store in flight stay held (request_finished -> True) until `poll` lists them in finished_storing.
- Emulation choices: a store starts at the step's start (vLLM starts it after the forward pass, one
  step later at most); a store job completes per step (blocks become ready for lookups as soon as
  their copy is done, as in vLLM >= 0.12).
Metrics: vLLM 0.16 counters `vllm:kv_offload_total_bytes` (bytes summed over TP ranks) and
`vllm:kv_offload_total_time` (seconds of link time), label transfer_type=GPU_to_CPU|CPU_to_GPU, keyed
with a `_total` suffix because the API layer renders `*_total` keys as Prometheus counters (exposed,
as vLLM's, as `vllm:kv_offload_total_bytes_total`); plus kvbench's CPU-tier gauges.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from kvbench.emulator.engine.connector import (
    ConnectorFacts,
    ConnectorPoll,
    ConnectorRequest,
    ScheduledChunk,
    StepTransfer,
)
from kvbench.emulator.engine.interface import BlockRemoved, BlockStored, KVEvent, TierHits
from kvbench.emulator.tiers.cpu_managers import BlockKey, make_manager
from kvbench.emulator.tiers.native_config import OffloadConfig
from kvbench.emulator.tiers.transfer import HostLink, kv_bytes_per_rank

GPU_TO_CPU = "GPU_to_CPU"
CPU_TO_GPU = "CPU_to_GPU"


@dataclass(frozen=True, slots=True)
class TransferJob:
    request_id: str
    keys: list[BlockKey]
    end_s: float
    duration_s: float
    total_bytes: int  # over all TP ranks


class OffloadingConnector:
    def __init__(self, config: OffloadConfig, facts: ConnectorFacts) -> None:
        self.config = config
        self.facts = facts
        self.manager = make_manager(config.eviction_policy, config.num_cpu_blocks)
        self.store_link = HostLink(facts.host_link_bytes_per_s)
        self.load_link = HostLink(facts.host_link_bytes_per_s)
        self._next_stored_block: dict[str, int] = {}  # request id -> offload blocks already handled
        self._local_hit_tokens: dict[str, int] = {}  # request id -> GPU hit at its lookup
        self._hits: dict[str, TierHits] = {}
        self._loads: dict[str, TransferJob] = {}
        self._stores: list[TransferJob] = []
        self._stores_in_flight: dict[str, int] = defaultdict(int)
        self._finished_waiting_for_store: set[str] = set()
        self._counters: dict[str, float] = defaultdict(float)

    # ---- keys

    def _offload_keys(
        self, request: ConnectorRequest, start: int = 0, end: int | None = None
    ) -> list[BlockKey]:
        factor = self.config.block_size_factor
        keys = list(request.block_hashes[factor - 1 :: factor])
        return keys[start:end]

    # ---- lookup and load

    def get_num_new_matched_tokens(
        self, request: ConnectorRequest, num_local_hit_tokens: int, now_s: float
    ) -> tuple[int, bool]:
        offload_bs = self.config.offload_block_size
        keys = self._offload_keys(request)
        self.manager.touch(keys)
        self._local_hit_tokens[request.request_id] = num_local_hit_tokens
        self._hits[request.request_id] = TierHits()
        if len(keys) * offload_bs - num_local_hit_tokens < offload_bs:
            return 0, False
        start_block = num_local_hit_tokens // offload_bs
        hits = self.manager.lookup(keys[start_block:])
        num_hit_tokens = (start_block + hits) * offload_bs - num_local_hit_tokens
        if hits == 0 or num_hit_tokens < offload_bs:
            return 0, False
        return num_hit_tokens, True

    def update_state_after_alloc(
        self,
        request: ConnectorRequest,
        block_ids: list[int],
        num_external_tokens: int,
        now_s: float,
    ) -> None:
        if num_external_tokens <= 0:
            return
        offload_bs = self.config.offload_block_size
        local_tokens = self._local_hit_tokens.get(request.request_id, 0)
        keys = self._offload_keys(
            request, local_tokens // offload_bs, (local_tokens + num_external_tokens) // offload_bs
        )
        self.manager.prepare_load(keys)
        rank_bytes = kv_bytes_per_rank(
            num_external_tokens, self.facts.kv_bytes_per_token, self.facts.tensor_parallel_size
        )
        slot = self.load_link.schedule(now_s, rank_bytes)
        total_bytes = rank_bytes * self.facts.tensor_parallel_size
        self._loads[request.request_id] = TransferJob(
            request.request_id, keys, slot.end_s, slot.duration_s, total_bytes
        )
        self._hits[request.request_id] = TierHits(cpu_tokens=num_external_tokens)

    # ---- write-through stores

    def build_step(self, scheduled: list[ScheduledChunk], now_s: float) -> StepTransfer:
        stored_bytes = 0
        for chunk in scheduled:
            stored_bytes += self._store_new_blocks(chunk, now_s)
        return StepTransfer(blocking_s=0.0, stored_bytes=stored_bytes)

    def _store_new_blocks(self, chunk: ScheduledChunk, now_s: float) -> int:
        request = chunk.request
        factor, offload_bs = self.config.block_size_factor, self.config.offload_block_size
        total_tokens = chunk.num_computed_tokens + chunk.num_scheduled_tokens
        num_blocks = min(total_tokens // offload_bs, len(request.block_hashes) // factor)
        start = self._next_stored_block.get(request.request_id, 0)
        if num_blocks <= start:
            return 0
        prepared = self.manager.prepare_store(self._offload_keys(request, start, num_blocks))
        if prepared is None:
            self._counters["kvbench:kv_offload_store_skipped_blocks_total|tier=cpu"] += (
                num_blocks - start
            )
            return 0  # 0.11.2+: skip this request now, retry next step
        self._next_stored_block[request.request_id] = num_blocks
        if not prepared.keys_to_store:
            return 0
        self.manager.touch(self._offload_keys(request, 0, num_blocks))
        rank_bytes = kv_bytes_per_rank(
            len(prepared.keys_to_store) * offload_bs,
            self.facts.kv_bytes_per_token,
            self.facts.tensor_parallel_size,
        )
        slot = self.store_link.schedule(now_s, rank_bytes)
        total_bytes = rank_bytes * self.facts.tensor_parallel_size
        self._stores.append(
            TransferJob(
                request.request_id, prepared.keys_to_store, slot.end_s, slot.duration_s, total_bytes
            )
        )
        self._stores_in_flight[request.request_id] += 1
        return total_bytes

    # ---- completion

    def request_finished(
        self, request: ConnectorRequest, block_ids: list[int], now_s: float
    ) -> bool:
        request_id = request.request_id
        self._next_stored_block.pop(request_id, None)
        self._local_hit_tokens.pop(request_id, None)
        if self._stores_in_flight.get(request_id, 0) > 0:
            self._finished_waiting_for_store.add(request_id)
            return True
        self._stores_in_flight.pop(request_id, None)
        return False

    def poll(self, now_s: float) -> ConnectorPoll:
        result = ConnectorPoll()
        for request_id, job in list(self._loads.items()):
            if job.end_s <= now_s:
                del self._loads[request_id]
                self.manager.complete_load(job.keys)
                self._count_transfer(CPU_TO_GPU, job)
                result.finished_loading.append(request_id)
        still_running = []
        for job in self._stores:
            if job.end_s > now_s:
                still_running.append(job)
                continue
            self.manager.complete_store(job.keys)
            self._count_transfer(GPU_TO_CPU, job)
            self._stores_in_flight[job.request_id] -= 1
            if self._stores_in_flight[job.request_id] == 0:
                del self._stores_in_flight[job.request_id]
                if job.request_id in self._finished_waiting_for_store:
                    self._finished_waiting_for_store.discard(job.request_id)
                    result.finished_storing.append(job.request_id)
        self._stores = still_running
        return result

    def _count_transfer(self, transfer_type: str, job: TransferJob) -> None:
        self._counters[f"vllm:kv_offload_total_bytes_total|transfer_type={transfer_type}"] += (
            job.total_bytes
        )
        self._counters[f"vllm:kv_offload_total_time_total|transfer_type={transfer_type}"] += (
            job.duration_s
        )

    # ---- reporting

    def external_hits(self, request_id: str) -> TierHits:
        return self._hits.get(request_id, TierHits())

    def take_events(self) -> list[KVEvent]:
        events: list[KVEvent] = []
        for event in self.manager.take_events():
            if event.removed:
                events.append(BlockRemoved(block_hashes=list(event.keys), medium="CPU"))
            else:
                events.append(
                    BlockStored(
                        block_hashes=list(event.keys),
                        parent_block_hash=None,
                        token_ids=[],
                        block_size=self.config.offload_block_size,
                        lora_id=None,
                        medium="CPU",
                    )
                )
        return events

    def reset(self) -> None:
        """reset_prefix_cache: drop every CPU block not being stored or loaded."""
        self.manager.clear()

    def metrics(self) -> dict[str, float]:
        out = dict(self._counters)
        for transfer_type in (GPU_TO_CPU, CPU_TO_GPU):
            out.setdefault(f"vllm:kv_offload_total_bytes_total|transfer_type={transfer_type}", 0.0)
            out.setdefault(f"vllm:kv_offload_total_time_total|transfer_type={transfer_type}", 0.0)
        used = self.manager.num_used_blocks()
        out["kvbench:cpu_kv_cache_usage_perc|tier=cpu"] = used / self.config.num_cpu_blocks
        out["kvbench:cpu_kv_cache_blocks|tier=cpu"] = float(self.config.num_cpu_blocks)
        out["kvbench:cpu_kv_cache_used_blocks|tier=cpu"] = float(used)
        return out
