"""The scheduler-side KV connector contract (after vLLM's KVConnectorBase_V1 scheduler half).

The scheduler calls a connector at the same points vLLM's scheduler does:

1. A waiting request with `num_computed_tokens == 0` (new or preempted) gets its local GPU prefix
   hit first, then `get_num_new_matched_tokens(request, num_local_hit_tokens)` for the tokens
   *beyond* it that an external tier holds. `load_async=True` (native offload) parks the request
   until `poll(now_s)` reports its load finished; `False` (LMCache) means the load happens inside
   the step and its time is added to the step (`StepTransfer.blocking_s`).
2. After the blocks are allocated: `update_state_after_alloc(request, block_ids, num_external_tokens)`.
3. Once per step, after scheduling: `build_step(scheduled, now_s)` decides stores (write-through of
   new full blocks) and returns the step's transfer cost.
4. When a request finishes: `request_finished(request, block_ids)`; True means the connector still
   reads those GPU blocks (a store in flight) and the scheduler must not free them until `poll`
   lists the request in `finished_storing`.
5. `take_events()` after each step: BlockStored / BlockRemoved events of the connector's media
   (e.g. medium="CPU"), published in the same batch as the GPU events.

Transfer time is costed by the connector from bytes and the host link bandwidth; the connector has
its own notion of "link busy until" so asynchronous transfers queue behind each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kvbench.emulator.engine.interface import KVEvent, TierHits


class ConnectorRequest(Protocol):
    """What a connector may read of a request (the engine's request state satisfies this)."""

    request_id: str

    @property
    def all_token_ids(self) -> Sequence[int]: ...  # prompt + generated so far

    @property
    def num_prompt_tokens(self) -> int: ...

    @property
    def num_computed_tokens(self) -> int: ...

    @property
    def block_hashes(self) -> Sequence[bytes]: ...  # GPU-block-size chained hashes, full blocks


@dataclass(slots=True)
class ScheduledChunk:
    """One request's share of a step: `num_scheduled_tokens` new tokens after `num_computed_tokens`."""

    request: ConnectorRequest
    num_computed_tokens: int
    num_scheduled_tokens: int


@dataclass(slots=True)
class StepTransfer:
    """Transfer work attached to one step."""

    blocking_s: float = 0.0  # time the step must wait (synchronous loads/stores)
    loaded_bytes: int = 0
    stored_bytes: int = 0


@dataclass(slots=True)
class ConnectorPoll:
    finished_loading: list[str] = field(
        default_factory=list
    )  # request ids whose async load is done
    finished_storing: list[str] = field(
        default_factory=list
    )  # request ids whose held blocks may be freed
    failed_loading: list[str] = field(default_factory=list)  # loads that failed: recompute instead


class KVConnector(Protocol):
    def get_num_new_matched_tokens(
        self, request: ConnectorRequest, num_local_hit_tokens: int, now_s: float
    ) -> tuple[int, bool]: ...

    def update_state_after_alloc(
        self,
        request: ConnectorRequest,
        block_ids: list[int],
        num_external_tokens: int,
        now_s: float,
    ) -> None: ...

    def build_step(self, scheduled: list[ScheduledChunk], now_s: float) -> StepTransfer: ...

    def request_finished(
        self, request: ConnectorRequest, block_ids: list[int], now_s: float
    ) -> bool: ...

    def poll(self, now_s: float) -> ConnectorPoll: ...

    def external_hits(
        self, request_id: str
    ) -> TierHits: ...  # cpu/remote split of the external hit

    def take_events(self) -> list[KVEvent]: ...

    def reset(self) -> None: ...  # reset_prefix_cache also clears the connector's local tiers

    def metrics(self) -> dict[str, float]: ...  # see EngineStats.connector_metrics


@dataclass(frozen=True, slots=True)
class ConnectorFacts:
    """What the engine tells a connector about itself when building it
    (`kvbench.emulator.tiers.factory.build_connector(args: EngineArgs, facts: ConnectorFacts)`)."""

    model_name: str  # catalog name, e.g. "Qwen/Qwen3-8B" (LMCache keys use it)
    gpu_block_size: int  # tokens per GPU block
    kv_bytes_per_token: int  # whole model (all layers, K and V), at the KV dtype
    tensor_parallel_size: int  # each rank holds kv_bytes_per_token / tp
    host_link_bytes_per_s: float  # pinned host<->device copy bandwidth per GPU, each way
    kv_dtype: str = "bfloat16"
    num_gpu_blocks: int = 0
    # LMCache only (CostParams.lmcache_*): its copy rate (0: the host link), its work per chunk
    # moved and per request scheduled, its remote path's rate beyond the network (0: free).
    lmcache_copy_bytes_per_s: float = 0.0
    lmcache_chunk_overhead_s: float = 0.0
    lmcache_per_request_overhead_s: float = 0.0
    lmcache_remote_bytes_per_s: float = 0.0
