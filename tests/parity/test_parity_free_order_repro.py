"""Minimal reproduction of the free-order difference the real-vLLM parity run found (scripts/parity/),
now covered by the engine's `vllm_compat="0.32"` profile (engine/compat.py).

vLLM 0.32 `BlockPool.free_blocks` (v1/core/block_pool.py, since vllm-project/vllm#42656) puts freed
blocks that hold *no* hash (a request's partial tail block, or any block when caching is off) at
the FRONT of the free queue, and only cached blocks at the tail (LRU). vLLM 0.11 appended both to
the tail. With the 0.32 order a partial block is reused before any cached block is evicted.

Block size 8, 6 blocks (null + 5), sequential requests with max_tokens 1 (nothing decoded is kept):
  A (12 tok) takes [1, 2]; block 1 cached. Freed reversed [2, 1]:
     0.32 -> free queue [2, 3, 4, 5, 1]      0.11 -> [3, 4, 5, 2, 1]
  B (20 tok, unrelated) takes 3 blocks:  0.32 [2, 3, 4] -> queue [4, 5, 1, 3, 2]
                                         0.11 [3, 4, 5] -> queue [2, 1, 5, 4, 3]
  C (12 tok, unrelated) takes 2 blocks:  0.32 pops 4, 5 (nothing evicted)
                                         0.11 pops 2, 1: evicts A's block -> BlockRemoved
  D = A again: 0.32 hits 8 tokens; 0.11 hits 0.
The 0.32 expectations are vLLM 0.32's own BlockPool's (scripts/parity/vllm_free_order_check.py
replays these operations on it).
"""

from __future__ import annotations

import pytest

from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.interface import BlockRemoved, EngineArgs, EngineRequest


def _engine(vllm_compat: str):
    return build_engine(
        EngineArgs(
            model="kvbench/tiny-qwen3",
            hardware="H100-SXM",
            block_size=8,
            num_gpu_blocks_override=6,
            max_model_len=48,
            max_num_seqs=4,
            max_num_batched_tokens=64,
            env={"PYTHONHASHSEED": "0"},
            vllm_compat=vllm_compat,
        )
    )


def _run(engine, request_id: str, prompt: list[int], now_s: float):
    engine.add_request(
        EngineRequest(request_id=request_id, prompt_token_ids=prompt, max_tokens=1, arrival_s=now_s)
    )
    result = engine.step(now_s)
    assert not engine.has_unfinished_requests()
    return result


@pytest.mark.parametrize(
    ("vllm_compat", "queue_after_a", "num_removed_by_c", "d_cached_tokens"),
    [
        ("0.32", [2, 3, 4, 5, 1], 0, 8),
        ("0.11", [3, 4, 5, 2, 1], 1, 0),
    ],
)
def test_uncached_tail_blocks_reuse_order(
    vllm_compat, queue_after_a, num_removed_by_c, d_cached_tokens
):
    engine = _engine(vllm_compat)
    a = list(range(100, 112))
    _run(engine, "A", a, 0.0)
    assert engine.pool.free_queue.block_ids() == queue_after_a
    _run(engine, "B", list(range(200, 220)), 1.0)
    c = _run(engine, "C", list(range(300, 312)), 2.0)
    assert len([e for e in c.kv_events if isinstance(e, BlockRemoved)]) == num_removed_by_c
    d = _run(engine, "D", a, 3.0)
    assert d.outputs[0].num_cached_tokens == d_cached_tokens
