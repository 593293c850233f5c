"""Per-request engine state (after vLLM v1 `v1/request.py`), plus the deterministic "sampler".

A request's tokens are `all_token_ids` = prompt + generated so far. The scheduler's only notion of
progress is `num_computed_tokens` catching up with `num_tokens`; there are no prefill/decode phases.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from kvbench.emulator.engine.interface import EngineRequest, FinishReason, TierHits

_MASK64 = (1 << 64) - 1


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    WAITING_FOR_REMOTE_KVS = "waiting_for_remote_kvs"  # parked until an async KV load finishes
    RUNNING = "running"
    PREEMPTED = "preempted"  # back in waiting, recomputes from scratch
    FINISHED = "finished"


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def request_token_seed(sampling_seed: int, request_id: str) -> int:
    """Per-request base of the generated-token stream (stable across processes: no `hash()`)."""
    x = sampling_seed & _MASK64
    for byte in request_id.encode():
        x = _splitmix64(x ^ byte)
    return x


def generated_token_id(token_seed: int, output_index: int, vocab_size: int) -> int:
    """The token a request generates at output position `output_index` (0 = first output token):
    `_splitmix64(token_seed + output_index) % vocab_size`, the mix inlined (one call per token)."""
    x = (token_seed + output_index + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) % vocab_size


class Request:
    """Mutable engine-side state of one request (satisfies connector.ConnectorRequest)."""

    __slots__ = (
        "request_id",
        "prompt_token_ids",
        "all_token_ids",
        "max_tokens",
        "arrival_s",
        "schedulable_s",
        "cache_salt",
        "kv_transfer_params",
        "token_seed",
        "status",
        "num_computed_tokens",
        "block_hashes",
        "num_cached_tokens",
        "hits",
        "num_external_computed_tokens",
        "num_preemptions",
        "finish_reason",
        "run_join",
        "run_due",
        "runs_allowed",
        "running_seq",
    )

    def __init__(self, req: EngineRequest) -> None:
        self.request_id = req.request_id
        self.prompt_token_ids = list(req.prompt_token_ids)
        self.all_token_ids: list[int] = list(req.prompt_token_ids)
        self.max_tokens = req.max_tokens
        self.arrival_s = req.arrival_s
        # when the API server has handed it to the engine core (set by the engine on add)
        self.schedulable_s = req.arrival_s
        self.cache_salt = req.cache_salt
        self.kv_transfer_params = req.kv_transfer_params
        self.token_seed = request_token_seed(req.sampling_seed, req.request_id)
        self.status = RequestStatus.WAITING
        self.num_computed_tokens = 0
        self.block_hashes: list[bytes] = []
        # vLLM's num_cached_tokens: local + external hit at first scheduling; -1 until then.
        self.num_cached_tokens = -1
        self.hits = TierHits()
        self.num_external_computed_tokens = 0
        self.num_preemptions = 0
        self.finish_reason: FinishReason | None = None
        # a decode run's first step and the step it ends before (decode_run.py); -1: in none
        self.run_join = -1
        self.run_due = -1
        self.runs_allowed = True  # False: every token of it comes in an output
        self.running_seq = -1  # its place in the running order (Scheduler._start_running)

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.all_token_ids) - len(self.prompt_token_ids)

    def output_token_ids(self) -> Sequence[int]:
        return self.all_token_ids[len(self.prompt_token_ids) :]

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, {self.status.value}, computed={self.num_computed_tokens}/"
            f"{self.num_tokens})"
        )
