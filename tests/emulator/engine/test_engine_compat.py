"""Behaviour profiles (`--vllm-compat`, engine/compat.py): "0.11" (default, vLLM 0.11.x) and
"0.32" (vLLM 0.32). Each test pins the exact observable difference for both profiles.
Engine shape (engine_testlib): block size 16, 11 blocks (block 0 is the null block)."""

from __future__ import annotations

import hashlib
import pickle

import cbor2
import pytest
from engine_testlib import make_args, make_engine, make_request

from kvbench.emulator.api.args import parse_serve_args
from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.interface import BlockRemoved
from kvbench.emulator.engine.virtual import VirtualDriver
from kvbench.errors import UserError

COMMON = [i for i in range(3) for _ in range(16)]  # 3 full blocks shared by requests


def free_ids(engine) -> list[int]:
    return engine.pool.free_queue.block_ids()


def _two_requests_sharing_a_prefix(vllm_compat: str):
    engine = make_engine(vllm_compat=vllm_compat)
    engine.add_request(make_request("r0", COMMON + [3] * 7))  # 55 tokens -> blocks 1..4
    engine.add_request(make_request("r1", COMMON + [5] * 5))  # 53 tokens -> hits 1..3, new 5
    engine.step(0.0)
    return engine


def test_free_order_0_11_appends_every_freed_block():
    engine = _two_requests_sharing_a_prefix("0.11")
    # r0 freed [4,3,2,1] (only 4 reaches 0), then r1 [5,3,2,1]: all appended at the tail.
    assert free_ids(engine) == [6, 7, 8, 9, 10, 4, 5, 3, 2, 1]


def test_free_order_0_32_puts_uncached_blocks_first():
    engine = _two_requests_sharing_a_prefix("0.32")
    # 4 (r0's partial block, no hash) is prepended, then 5 (r1's partial block) before it;
    # the cached 3, 2, 1 go to the tail in r1's reverse order.
    assert free_ids(engine) == [5, 4, 6, 7, 8, 9, 10, 3, 2, 1]

    # 8 blocks for 120 tokens: pops 5, 4, 6..10 (never cached) and 3 (cached: evicted).
    engine.add_request(make_request("r2", [7] * 120))
    second = engine.step(1.0)
    assert len([e for e in second.kv_events if isinstance(e, BlockRemoved)]) == 1
    # r2 held [5, 4, 6, 7, 8, 9, 10, 3]; 121 tokens fill 7 blocks, so 3 (partial) goes first.
    assert free_ids(engine) == [3, 2, 1, 10, 9, 8, 7, 6, 4, 5]


@pytest.mark.parametrize(
    ("vllm_compat", "expected"),
    [
        ("0.11", [5, 6, 7, 8, 9, 10, 4, 3, 2, 1]),
        ("0.32", [4, 3, 2, 1, 5, 6, 7, 8, 9, 10]),  # caching off: every block is uncached -> LIFO
    ],
)
def test_free_order_without_prefix_caching(vllm_compat, expected):
    engine = make_engine(vllm_compat=vllm_compat, enable_prefix_caching=False)
    engine.add_request(make_request("r0", COMMON + [3] * 7))
    engine.step(0.0)
    assert free_ids(engine) == expected


def _request_waiting_for_blocks(vllm_compat: str):
    """big (150 tokens, 2 outputs) holds all 10 blocks of 16; small (20 tokens, its first block
    equal to big's first) cannot get its 2nd block until big finishes after step 2."""
    engine = make_engine(vllm_compat=vllm_compat)
    engine.add_request(make_request("big", [1] * 150, max_tokens=2))  # takes all 10 blocks
    engine.add_request(make_request("small", [1] * 16 + [2] * 4, max_tokens=1))
    VirtualDriver(engine).run(max_steps=20)
    assert not engine.has_unfinished_requests()
    return engine.stats()


def test_waiting_request_counted_every_step_under_0_11():
    stats = _request_waiting_for_blocks("0.11")
    # small is looked up in steps 1 and 2 (no room; 16 hit tokens each: big's block 1 is
    # referenced) and admitted in step 3 (big freed: its cached block 1 still hits).
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (150 + 3 * 20, 3 * 16)


def test_waiting_request_counted_once_at_admission_under_0_32():
    stats = _request_waiting_for_blocks("0.32")
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (150 + 20, 16)
    assert stats.num_preemptions == 0


def _preempted_run(**build_kwargs):
    engine = build_engine(
        make_args(max_num_batched_tokens=256, **build_kwargs.pop("args", {})), **build_kwargs
    )
    engine.add_request(make_request("r0", [1] * 80, max_tokens=4))  # exactly 5 blocks
    engine.add_request(make_request("r1", [2] * 80, max_tokens=4))  # exactly 5 blocks
    VirtualDriver(engine).run(max_steps=50)
    return engine


def test_preempted_request_under_0_32_counted_apart_and_once():
    # r1 is preempted in step 2, retried (no room) in steps 3 and 4, admitted in step 5 with its
    # first 4 blocks hit. 0.32 counts it apart (even when asked for 0.11.0's counting), once.
    engine = _preempted_run(args={"vllm_compat": "0.32"}, count_preempted_separately=False)
    stats = engine.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (160, 0)
    assert (engine.kv.stats.preempted_queries, engine.kv.stats.preempted_hits) == (81, 64)
    assert stats.num_preemptions == 1


def test_preempted_request_under_0_11_keeps_its_switch():
    separate = _preempted_run(args={"vllm_compat": "0.11"})
    assert (separate.kv.stats.preempted_queries, separate.kv.stats.preempted_hits) == (
        3 * 81,
        3 * 64,
    )
    together = _preempted_run(args={"vllm_compat": "0.11"}, count_preempted_separately=False)
    assert (together.stats().prefix_cache_queries, together.stats().prefix_cache_hits) == (
        160 + 3 * 81,
        3 * 64,
    )


def _fake_urandom(n: int) -> bytes:
    return b"\x01" * n


@pytest.mark.parametrize("algo", ["sha256", "sha256_cbor"])
def test_unseeded_none_hash_0_11_is_random(algo):
    engine = build_engine(
        make_args(env={}, prefix_caching_hash_algo=algo, vllm_compat="0.11"), urandom=_fake_urandom
    )
    assert engine.hasher.root_hash == b"\x01" * 32


@pytest.mark.parametrize(
    ("algo", "expected"),
    [
        (
            "sha256",
            hashlib.sha256(
                pickle.dumps("vllm-none-hash", protocol=pickle.HIGHEST_PROTOCOL)
            ).digest(),
        ),
        ("sha256_cbor", hashlib.sha256(cbor2.dumps("vllm-none-hash", canonical=True)).digest()),
    ],
)
def test_unseeded_none_hash_0_32_is_the_fixed_default(algo, expected):
    engine = build_engine(
        make_args(env={}, prefix_caching_hash_algo=algo, vllm_compat="0.32"), urandom=_fake_urandom
    )
    assert engine.hasher.root_hash == expected


@pytest.mark.parametrize("vllm_compat", ["0.11", "0.32"])
def test_pythonhashseed_wins_in_both_profiles(vllm_compat):
    engine = make_engine(
        env={"PYTHONHASHSEED": "7"}, prefix_caching_hash_algo="sha256_cbor", vllm_compat=vllm_compat
    )
    assert engine.hasher.root_hash == hashlib.sha256(cbor2.dumps("7", canonical=True)).digest()


def test_unknown_profile_names_the_flag():
    with pytest.raises(UserError, match=r"^--vllm-compat: '0.20' is not one of 0.11, 0.26, 0.32$"):
        make_engine(vllm_compat="0.20")


def test_serve_flag_reaches_engine_args():
    assert parse_serve_args(["m"], {}).engine_args.vllm_compat == "0.11"
    assert parse_serve_args(["m", "--vllm-compat", "0.32"], {}).engine_args.vllm_compat == "0.32"
    with pytest.raises(UserError, match="^--vllm-compat: "):
        parse_serve_args(["m", "--vllm-compat=0.2"], {})


def test_0_26_frees_uncached_first_counts_lookups_early_and_draws_a_random_none_hash():
    # vLLM 0.26.0's wheel: #42656 in, #48860 and #51875 not yet
    engine = build_engine(
        make_args(env={}, prefix_caching_hash_algo="sha256_cbor", vllm_compat="0.26"),
        urandom=_fake_urandom,
    )
    assert engine.pool.free_uncached_first is True
    assert engine.kv.count_lookups_at_admission is False
    assert engine.hasher.root_hash == b"\x01" * 32  # os.urandom(32), as 0.11
