"""Two more places where vLLM 0.11 and the real parity peer (vLLM 0.32, CPU build) differ, now
covered by `vllm_compat="0.32"` (engine/compat.py). Neither shows in the sequential parity run (it
sets PYTHONHASHSEED, and one request at a time never waits for blocks), so each has a minimal
engine-level reproduction here, for both profiles.

1. NONE_HASH without PYTHONHASHSEED. 0.32 `kv_cache_utils.resolve_none_hash_seed` (since
   vllm-project/vllm#51875): the seed is PYTHONHASHSEED if set, else the fixed "vllm-none-hash"
   for sha256 / sha256_cbor (random only for the non-cryptographic xxhash algorithms). Checked on
   the installed build: `init_none_hash(sha256_cbor)` with PYTHONHASHSEED unset gives
   `sha256_cbor("vllm-none-hash")`. 0.11 draws 32 random bytes.
2. Prefix-cache counters of a request that waits for blocks. 0.32 `Scheduler.schedule` records
   `prefix_cache_queries/hits` after `allocate_slots` succeeds ("Record at admission so
   unscheduled lookups are not counted", vllm-project/vllm#48860); 0.11 counted inside
   `get_computed_blocks`, so a request that failed allocation was counted again on every step.
"""

from __future__ import annotations

import hashlib

import cbor2
import pytest

from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.interface import EngineArgs, EngineRequest


def _args(env: dict[str, str], vllm_compat: str) -> EngineArgs:
    return EngineArgs(
        model="kvbench/tiny-qwen3",
        hardware="H100-SXM",
        block_size=8,
        num_gpu_blocks_override=6,
        max_model_len=48,
        max_num_seqs=4,
        max_num_batched_tokens=64,
        prefix_caching_hash_algo="sha256_cbor",
        env=env,
        vllm_compat=vllm_compat,
    )


def test_unseeded_none_hash_is_vllm_032_fixed_default():
    engine = build_engine(_args(env={}, vllm_compat="0.32"))
    expected = hashlib.sha256(cbor2.dumps("vllm-none-hash", canonical=True)).digest()
    assert engine.hasher.root_hash == expected


def test_unseeded_none_hash_is_random_under_0_11():
    draws = iter([b"\x07" * 32, b"\x08" * 32])
    roots = [
        build_engine(
            _args(env={}, vllm_compat="0.11"), urandom=lambda n: next(draws)
        ).hasher.root_hash
        for _ in range(2)
    ]
    assert roots == [b"\x07" * 32, b"\x08" * 32]


def _waiting_request_queries(vllm_compat: str) -> int:
    engine = build_engine(_args(env={"PYTHONHASHSEED": "0"}, vllm_compat=vllm_compat))
    # A: 30 prompt tokens + 8 outputs -> 5 of the 5 usable blocks while it decodes.
    engine.add_request(
        EngineRequest(
            request_id="A", prompt_token_ids=list(range(100, 130)), max_tokens=8, arrival_s=0.0
        )
    )
    now_s = 0.0
    now_s += engine.step(now_s).duration_s
    # B (20 tokens, 3 blocks) cannot be admitted until A finishes and frees its blocks.
    engine.add_request(
        EngineRequest(
            request_id="B", prompt_token_ids=list(range(200, 220)), max_tokens=1, arrival_s=now_s
        )
    )
    for _ in range(50):
        if not engine.has_unfinished_requests():
            break
        now_s += engine.step(now_s).duration_s
    assert not engine.has_unfinished_requests()
    assert engine.stats().num_preemptions == 0
    return engine.stats().prefix_cache_queries


@pytest.mark.parametrize(
    ("vllm_compat", "num_lookups_of_b"),
    [
        ("0.32", 1),  # once, at admission
        # 0.11: A (31 tokens after step 1) holds 4 blocks, then 5 from its 33rd token; B needs 3 and
        # is looked up in steps 2..8 (A's 2nd..8th outputs; A frees at the end of step 8) and step 9.
        ("0.11", 8),
    ],
)
def test_request_waiting_for_blocks_counting(vllm_compat, num_lookups_of_b):
    assert _waiting_request_queries(vllm_compat) == 30 + 20 * num_lookups_of_b
