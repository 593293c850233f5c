"""Tiny engine configurations for the engine tests (vLLM test style: block size 16, ~11 blocks)."""

from __future__ import annotations

from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.interface import EngineArgs, EngineRequest


def make_args(**overrides) -> EngineArgs:
    values = dict(
        model="kvbench/tiny-qwen3",
        hardware="H100-SXM",
        num_gpu_blocks_override=11,
        max_model_len=160,
        block_size=16,
        max_num_seqs=8,
        max_num_batched_tokens=256,
        env={"PYTHONHASHSEED": "0"},
    )
    values.update(overrides)
    return EngineArgs(**values)


def make_request(
    request_id: str, prompt: list[int], max_tokens: int = 1, arrival_s: float = 0.0, **kwargs
) -> EngineRequest:
    return EngineRequest(
        request_id=request_id,
        prompt_token_ids=prompt,
        max_tokens=max_tokens,
        arrival_s=arrival_s,
        **kwargs,
    )


def make_engine(**overrides):
    return build_engine(make_args(**overrides))
