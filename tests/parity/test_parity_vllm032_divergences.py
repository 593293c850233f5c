"""Two more places where the emulator follows vLLM 0.11 and the real peer (vLLM 0.32, CPU build)
differs. Neither shows in the sequential parity run (it sets PYTHONHASHSEED, and one request at a
time never waits for blocks), so each has a minimal engine-level reproduction here, with vLLM
0.32's behaviour as the expectation (strict xfail: an unexpected pass fails, so the marker goes
when the engine changes).

1. NONE_HASH without PYTHONHASHSEED. 0.32 `kv_cache_utils.resolve_none_hash_seed`: the seed is
   PYTHONHASHSEED if set, else the fixed "vllm-none-hash" for sha256 / sha256_cbor (random only for
   the non-cryptographic xxhash algorithms). Checked on the installed build:
   `init_none_hash(sha256_cbor)` with PYTHONHASHSEED unset gives `sha256_cbor("vllm-none-hash")`.
   The emulator draws 32 random bytes (0.11), so its hashes never match an unseeded real vLLM.
2. Prefix-cache counters of a request that waits for blocks. 0.32 `Scheduler.schedule` records
   `prefix_cache_queries/hits` after `allocate_slots` succeeds ("Record at admission so
   unscheduled lookups are not counted"); 0.11 counted inside `get_computed_blocks`, so a request
   that failed allocation was counted again on every step it waited. The emulator does the latter.
"""

from __future__ import annotations

import hashlib

import cbor2
import pytest

from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.interface import EngineArgs, EngineRequest


def _args(env: dict[str, str]) -> EngineArgs:
    return EngineArgs(model="kvbench/tiny-qwen3", hardware="H100-SXM", block_size=8, num_gpu_blocks_override=6,
                      max_model_len=48, max_num_seqs=4, max_num_batched_tokens=64,
                      prefix_caching_hash_algo="sha256_cbor", env=env)


@pytest.mark.xfail(strict=True, reason="emulator: random NONE_HASH without PYTHONHASHSEED (vLLM 0.11); "
                                       "0.32 hashes the fixed seed 'vllm-none-hash'")
def test_unseeded_none_hash_is_vllm_032_fixed_default():
    engine = build_engine(_args(env={}))
    expected = hashlib.sha256(cbor2.dumps("vllm-none-hash", canonical=True)).digest()
    assert engine.hasher.root_hash == expected


@pytest.mark.xfail(strict=True, reason="emulator counts a waiting request's lookup on every step it "
                                       "fails allocation (vLLM 0.11); 0.32 counts it once, at admission")
def test_request_waiting_for_blocks_is_counted_once():
    engine = build_engine(_args(env={"PYTHONHASHSEED": "0"}))
    # A: 30 prompt tokens + 8 outputs -> 5 of the 5 usable blocks while it decodes.
    engine.add_request(EngineRequest(request_id="A", prompt_token_ids=list(range(100, 130)), max_tokens=8,
                                     arrival_s=0.0))
    now_s = 0.0
    now_s += engine.step(now_s).duration_s
    # B (20 tokens, 3 blocks) cannot be admitted until A finishes and frees its blocks.
    engine.add_request(EngineRequest(request_id="B", prompt_token_ids=list(range(200, 220)), max_tokens=1,
                                     arrival_s=now_s))
    for _ in range(50):
        if not engine.has_unfinished_requests():
            break
        now_s += engine.step(now_s).duration_s
    assert not engine.has_unfinished_requests()
    stats = engine.stats()
    assert stats.prefix_cache_queries == 30 + 20
    assert stats.num_preemptions == 0
