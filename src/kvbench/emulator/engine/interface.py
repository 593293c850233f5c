"""The contract between the emulated engine and whatever drives it (HTTP front, real-time or
virtual-time driver, tests).

The engine is clock-agnostic: it never reads the wall clock. A driver calls `step(now_s)`, gets the
step's planned duration and its outputs, and decides when the next step starts (a real-time driver
sleeps to absolute deadlines; a virtual-time driver just adds the duration). Outputs of a step are
"delivered" at `now_s + duration_s`.

Everything that crosses this boundary is a small typed value defined here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class FinishReason(str, enum.Enum):
    LENGTH = "length"  # max_tokens reached
    STOP = "stop"  # a stop condition (EOS when ignore_eos is off) was met
    ABORT = "abort"  # the client went away or the request was aborted


@dataclass(slots=True)
class EngineRequest:
    """A request as the HTTP layer hands it to the engine (prompt already tokenized)."""

    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    arrival_s: float
    ignore_eos: bool = False
    # Tokens the emulator "generates" are a deterministic function of the request and position,
    # seeded here so a test can predict them.
    sampling_seed: int = 0
    cache_salt: str | None = None
    # Per-request connector settings (vLLM's kv_transfer_params, e.g. {"lmcache.skip_save": true}).
    kv_transfer_params: dict | None = None


@dataclass(slots=True)
class TierHits:
    """Prompt tokens that were served from each KV tier instead of being computed."""

    gpu_tokens: int = 0
    cpu_tokens: int = 0
    remote_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.gpu_tokens + self.cpu_tokens + self.remote_tokens


@dataclass(slots=True)
class RequestOutput:
    """What one step produced for one request."""

    request_id: str
    new_token_ids: list[int]
    finished: bool = False
    finish_reason: FinishReason | None = None
    num_prompt_tokens: int = 0
    # vLLM's usage.prompt_tokens_details.cached_tokens: local + external hit tokens at the
    # request's first scheduling (set on every output once known).
    num_cached_tokens: int = 0
    hits: TierHits = field(default_factory=TierHits)
    num_preemptions: int = 0


# ---- KV cache events, as vLLM's publisher models them (distributed/kv_events.py). The wire
# encoding (msgpack, 0.11 positional arrays or 0.32 tagged maps) belongs to the API layer.

BlockHash = int | bytes


@dataclass(slots=True)
class BlockStored:
    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = "GPU"


@dataclass(slots=True)
class BlockRemoved:
    block_hashes: list[BlockHash]
    medium: str | None = "GPU"


@dataclass(slots=True)
class AllBlocksCleared:
    pass


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(slots=True)
class StepResult:
    """One engine step. `duration_s` is the emulated GPU time of the step (compute plus any
    transfer the step must wait for); outputs are due at start + duration."""

    duration_s: float
    outputs: list[RequestOutput] = field(default_factory=list)
    kv_events: list[KVEvent] = field(default_factory=list)
    num_scheduled_tokens: int = 0
    num_running: int = 0
    num_waiting: int = 0


@dataclass(slots=True)
class EngineStats:
    """Monotonic counters (tokens/requests, counted the way vLLM counts them) and current gauges.

    The API layer renders these as vLLM's Prometheus metrics; the names map 1:1 onto
    `vllm:<name>` (counters get `_total`).
    """

    # gauges
    num_requests_running: int = 0
    num_requests_waiting: int = 0
    kv_cache_usage_perc: float = 0.0  # 0..1, referenced blocks only
    num_gpu_blocks: int = 0
    block_size: int = 16
    # counters
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    external_prefix_cache_queries: int = 0
    external_prefix_cache_hits: int = 0
    num_preemptions: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    # prompt tokens by where they came from: local_compute | local_cache_hit | external_kv_transfer
    prompt_tokens_by_source: dict[str, int] = field(default_factory=dict)
    # cached prompt tokens by medium: device | host | p2p | disk | external_unspecified
    prompt_tokens_cached_by_source: dict[str, int] = field(default_factory=dict)
    request_success: dict[str, int] = field(default_factory=dict)  # by finish reason
    # connector-specific counters and gauges, already named as the real system names them,
    # e.g. {"vllm:kv_offload_total_bytes|transfer_type=GPU_to_CPU": 1.2e9}
    connector_metrics: dict[str, float] = field(default_factory=dict)


class Engine(Protocol):
    def add_request(self, request: EngineRequest) -> None: ...

    def abort_request(self, request_id: str) -> None: ...

    def has_unfinished_requests(self) -> bool: ...

    def step(self, now_s: float) -> StepResult: ...

    def reset_prefix_cache(self) -> bool: ...

    def stats(self) -> EngineStats: ...


@dataclass(slots=True)
class EngineArgs:
    """Everything `kvbench emulate serve` takes (the `vllm serve` flags it models, plus the
    hardware profile and the process environment the connectors read). Built by the API layer's
    flag parser; consumed by `kvbench.emulator.engine.build.build_engine`."""

    model: str  # catalog model name as vLLM takes it, e.g. "Qwen/Qwen3-8B"
    hardware: str = "H100-SXM"
    served_model_name: str | None = None
    tensor_parallel_size: int = 1
    max_num_seqs: int | None = (
        None  # None: vLLM 0.11's default for the GPU (1024 on H100/H200, else 256)
    )
    max_num_batched_tokens: int | None = None  # None: vLLM's default for the chosen mode
    max_model_len: int | None = None  # None: the model's context length from the catalog
    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    num_gpu_blocks_override: int | None = None
    enable_prefix_caching: bool = True
    prefix_caching_hash_algo: str = "sha256"  # vLLM 0.11 default; "sha256_cbor" for llm-d
    enable_prompt_tokens_details: bool = False
    kv_transfer_config: dict | None = None  # --kv-transfer-config JSON, verbatim
    kv_events_config: dict | None = None  # --kv-events-config JSON, verbatim
    env: dict[str, str] = field(default_factory=dict)  # PYTHONHASHSEED, LMCACHE_*, ...
    seed: int = 0
    # Behaviour profile (engine/compat.py): "0.11" (the seeds' vLLM) or "0.32" (the parity peer).
    vllm_compat: str = "0.11"
    # Generated token ids are drawn from [0, generated_vocab_size) (the served tokenizer's ordinary
    # vocabulary, so streamed ids decode to text); None: the model catalog's vocab_size.
    generated_vocab_size: int | None = None
