"""Scorers, score combination and the picker on tiny cases with exact expected numbers."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest
import xxhash

from kvbench.emulator.router.endpoints import Endpoint, EndpointMetrics
from kvbench.emulator.router.health import EndpointHealth
from kvbench.emulator.router.index_memory import InMemoryIndex, PodEntry
from kvbench.emulator.router.metrics import EppMetrics
from kvbench.emulator.router.picker import MaxScorePicker, weighted_totals
from kvbench.emulator.router.precise import (
    TIER_WEIGHTS,
    PrecisePrefixCacheScorer,
    block_keys,
    longest_prefix_scores,
    normalize,
)
from kvbench.emulator.router.prefix_approx import ApproxPrefixCacheScorer, go_json, hash_prompt
from kvbench.emulator.router.request import RouterRequest
from kvbench.emulator.router.scheduler import Scheduler, WeightedScorer
from kvbench.emulator.router.scorers import (
    ActiveRequestScorer,
    KVCacheUtilizationScorer,
    LoadAwareScorer,
    QueueScorer,
)


def endpoint(
    port: int,
    waiting: int = 0,
    usage: float = 0.0,
    block_size: int | None = None,
    num_gpu_blocks: int | None = None,
) -> Endpoint:
    metrics = EndpointMetrics(
        waiting_requests=waiting,
        kv_cache_usage=usage,
        block_size_tokens=block_size,
        num_gpu_blocks=num_gpu_blocks,
    )
    return Endpoint(f"http://127.0.0.1:{port}", metrics=metrics, health=EndpointHealth(ready=True))


def text_request(prompt: str, request_id: str = "r1", model: str = "m") -> RouterRequest:
    return RouterRequest(request_id=request_id, model=model, is_chat=False, prompt_text=prompt)


A, B, C = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"


async def test_queue_scorer_is_min_max_inverted_and_all_equal_is_one():
    scores = (
        await QueueScorer("q").score(
            text_request("x"), [endpoint(1, 0), endpoint(2, 5), endpoint(3, 10)]
        )
    ).scores
    assert scores == {A: 1.0, B: 0.5, C: 0.0}
    equal = (
        await QueueScorer("q").score(text_request("x"), [endpoint(1, 3), endpoint(2, 3)])
    ).scores
    assert equal == {A: 1.0, B: 1.0}


async def test_kv_cache_utilization_and_load_aware_scores():
    eps = [endpoint(1, usage=0.25), endpoint(2, waiting=64, usage=1.0), endpoint(3, waiting=500)]
    assert (await KVCacheUtilizationScorer("k").score(text_request("x"), eps)).scores == {
        A: 0.75,
        B: 0.0,
        C: 1.0,
    }
    assert (await LoadAwareScorer("l").score(text_request("x"), eps)).scores == {
        A: 0.5,
        B: 0.25,
        C: 0.0,
    }


async def test_active_request_scorer_counts_in_flight_until_complete_or_timeout():
    now = [0.0]
    scorer = ActiveRequestScorer("a", clock=lambda: now[0], request_timeout_s=10.0)
    eps = [endpoint(1), endpoint(2), endpoint(3)]
    assert (await scorer.score(text_request("x"), eps)).scores == {A: 1.0, B: 1.0, C: 1.0}
    for i in range(4):
        scorer.pre_request(text_request("x", f"a{i}"), eps[0])
    scorer.pre_request(text_request("x", "b0"), eps[1])
    assert (await scorer.score(text_request("x"), eps)).scores == {A: 0.0, B: 0.75, C: 1.0}
    scorer.response_complete(text_request("x", "a0"), eps[0])
    assert (await scorer.score(text_request("x"), eps)).scores[B] == pytest.approx(2 / 3)
    now[0] = 11.0  # every request timed out
    assert (await scorer.score(text_request("x"), eps)).scores == {A: 1.0, B: 1.0, C: 1.0}


def test_weighted_totals_clamp_and_do_not_normalise_by_weight_sum():
    totals = weighted_totals(
        {"s1": {A: 1.0, B: 0.5}, "s2": {A: 2.0, B: -1.0}, "s3": {A: 0.25}},
        {"s1": 2.0, "s2": 1.0, "s3": 4.0},
        [A, B],
    )
    assert totals == {A: 2.0 + 1.0 + 1.0, B: 1.0 + 0.0 + 0.0}


def test_picker_takes_max_and_breaks_ties_reproducibly_with_a_seeded_rng():
    picker = MaxScorePicker()
    assert picker.pick({A: 1.0, B: 3.0, C: 2.0}, random.Random(1)) == [B]
    tie = {A: 1.0, B: 1.0, C: 0.5}
    first = [picker.pick(tie, random.Random(seed))[0] for seed in range(20)]
    again = [picker.pick(tie, random.Random(seed))[0] for seed in range(20)]
    assert first == again
    assert set(first) == {A, B}  # both tied endpoints get picked across seeds, never C
    assert MaxScorePicker(max_num_of_endpoints=2).pick(
        {A: 0.1, B: 0.9, C: 0.5}, random.Random(0)
    ) == [B, C]


def test_approximate_hash_chain_is_xxhash_of_chunk_and_little_endian_parent():
    seed = xxhash.xxh64_intdigest(b"modelsalt")
    first = xxhash.xxh64_intdigest(b"abcd" + struct.pack("<Q", seed))
    second = xxhash.xxh64_intdigest(b"efgh" + struct.pack("<Q", first))
    assert hash_prompt(b"abcdefghij", "model", "salt", 4) == [
        first,
        second,
    ]  # "ij" is not a full block
    assert hash_prompt(b"abc", "model", "salt", 4) == []
    assert hash_prompt(b"abcdefghij", "model", "salt", 4, max_prefix_blocks=1) == [first]


def test_chat_input_is_go_json_of_messages():
    assert (
        go_json([{"role": "user", "content": "a<b & c>"}])
        == b'[{"role":"user","content":"a\\u003cb \\u0026 c\\u003e"}]'
    )


async def test_approximate_scorer_scores_matched_fraction_after_optimistic_insert():
    scorer = ApproxPrefixCacheScorer("p", auto_tune=False, block_size_chars=4)
    eps = [endpoint(1), endpoint(2)]
    first = text_request("aaaabbbbcccc", "r1")  # 3 blocks
    assert (await scorer.score(first, eps)).scores == {A: 0.0, B: 0.0}
    scorer.pre_request(first, eps[1])  # chosen: B gets all three hashes
    second = text_request("aaaabbbbddddeeee", "r2")  # shares 2 of its 4 blocks with B
    output = await scorer.score(second, eps)
    assert output.scores == {A: 0.0, B: 0.5}
    assert output.hit_tokens == {A: 0, B: 2}  # 2 blocks x 4 chars / 4 chars per token


async def test_approximate_scorer_lru_capacity_and_autotune():
    scorer = ApproxPrefixCacheScorer("p", auto_tune=True)
    eps = [endpoint(1, block_size=1, num_gpu_blocks=2), endpoint(2, block_size=1, num_gpu_blocks=2)]
    request = text_request("aaaabbbbcccc", "r1")  # autoTune: 1 token x 4 chars -> 3 blocks
    await scorer.score(request, eps)
    scorer.pre_request(request, eps[0])
    assert (
        len(scorer.servers[A].hashes) == 2
    )  # capacity num_gpu_blocks=2: the first block was evicted
    again = text_request("aaaabbbbcccc", "r2")
    assert (await scorer.score(again, eps)).scores == {
        A: 0.0,
        B: 0.0,
    }  # the chain breaks at block 0


def _cbor_bytes32(data: bytes) -> bytes:
    return b"\x58\x20" + data


def test_precise_keys_are_sha256_over_hand_encoded_cbor_low_64_bits():
    # init = sha256(CBOR("42")); CBOR text "42" = 0x62 '4' '2'
    init = hashlib.sha256(b"\x62" + b"42").digest()
    # block [1, 2]: CBOR array(3) [bytes(32) parent, array(2) [1, 2], null]
    first = hashlib.sha256(b"\x83" + _cbor_bytes32(init) + b"\x82\x01\x02" + b"\xf6").digest()
    second = hashlib.sha256(b"\x83" + _cbor_bytes32(first) + b"\x82\x03\x04" + b"\xf6").digest()
    assert block_keys([1, 2, 3, 4, 5], 2, "42") == [
        int.from_bytes(first[24:], "big"),
        int.from_bytes(second[24:], "big"),
    ]


def test_longest_prefix_keeps_pods_present_at_every_step_with_max_tier_weight():
    holders = [
        {A: {"gpu"}, B: {"cpu"}},
        {A: {"cpu", "gpu"}, B: {"cpu"}, C: {"gpu"}},
        {B: {"cpu"}},
        {A: {"gpu"}},
    ]
    scores, matched = longest_prefix_scores(holders, {A, B, C})
    assert scores == {
        A: pytest.approx(2.0),
        B: pytest.approx(2.4),
    }  # C missed key 0; A stops at key 2
    assert matched == {A: 2, B: 3}
    assert normalize(scores, [A, B, C]) == {A: 0.0, B: 1.0, C: 0.0}
    assert normalize({A: 2.0, B: 2.0}, [A, B, C]) == {A: 1.0, B: 1.0, C: 0.0}
    assert normalize({}, [A, B]) == {A: 0.0, B: 0.0}


async def test_precise_scorer_reads_index_and_predicts_hit_tokens():
    index = InMemoryIndex()
    tokens = list(range(10))
    keys = block_keys(tokens, 4, "7")  # two full blocks
    await index.add("m", keys, [PodEntry(A, "gpu")])
    await index.add("m", keys[:1], [PodEntry(B, "cpu")])
    scorer = PrecisePrefixCacheScorer("ppc", index, block_size_tokens=4, hash_seed="7")
    request = RouterRequest("r", "m", is_chat=False, prompt_token_ids=tokens)
    output = await scorer.score(request, [endpoint(1), endpoint(2), endpoint(3)])
    assert output.scores == {A: 1.0, B: 0.0, C: 0.0}  # raw 2.0 vs 0.8 -> min-max
    assert output.hit_tokens == {A: 8, B: 4, C: 0}
    other_model = RouterRequest("r", "other", is_chat=False, prompt_token_ids=tokens)
    assert (await scorer.score(other_model, [endpoint(1)])).scores == {A: 0.0}
    no_tokenizer = RouterRequest("r", "m", is_chat=False, prompt_text="hello")
    assert (await scorer.score(no_tokenizer, [endpoint(1)])).scores == {A: 0.0}


async def test_scheduler_decision_records_every_score_weights_totals_and_prediction():
    index = InMemoryIndex()
    tokens = list(range(8))
    await index.add("m", block_keys(tokens, 4, ""), [PodEntry(B, "gpu")])
    scorers = [
        WeightedScorer(PrecisePrefixCacheScorer("ppc", index, 4, ""), 2.0),
        WeightedScorer(QueueScorer("q"), 1.0),
    ]
    scheduler = Scheduler(scorers, MaxScorePicker(), random.Random(0), EppMetrics("t"))
    eps = [endpoint(1, waiting=0), endpoint(2, waiting=4)]
    decision = await scheduler.schedule(
        RouterRequest("r", "m", False, prompt_token_ids=tokens), eps
    )
    assert decision.chosen.address == B
    assert decision.scores == {"ppc": {A: 0.0, B: 1.0}, "q": {A: 1.0, B: 0.0}}
    assert decision.totals == {A: 1.0, B: 2.0}
    assert decision.predicted_hit_tokens == 8
    record = decision.log_record(wall_s=5.0)
    assert (record["endpoint"], record["weights"], record["predicted_hit_tokens"]) == (
        B,
        {"ppc": 2.0, "q": 1.0},
        8,
    )


def test_request_keys_match_the_emulated_engines_sha256_cbor_event_hashes():
    from kvbench.emulator.engine import hashing

    tokens = list(range(100, 150))
    parent = hashing.none_hash(hashing.sha256_cbor, {"PYTHONHASHSEED": "42"})
    engine_hashes = []
    for start in (0, 16, 32):
        parent = hashing.hash_block_tokens(hashing.sha256_cbor, parent, tokens[start : start + 16])
        engine_hashes.append(hashing.to_event_hash(parent))
    assert block_keys(tokens, 16, "42") == engine_hashes


async def test_precise_scorer_tokenizes_text_and_chat_like_the_emulated_engine():
    from kvbench.emulator.api.tokenizer import BuiltinTokenizer, chatml_prompt
    from kvbench.emulator.router.precise import load_text_tokenizer

    tokenizer = load_text_tokenizer()
    assert tokenizer is not None
    text = "The quick brown fox jumps over the lazy dog. " * 8
    messages = [{"role": "user", "content": text}]
    index = InMemoryIndex()
    for prompt in (text, chatml_prompt(messages)):
        await index.add(
            "m", block_keys(BuiltinTokenizer().encode(prompt), 16, ""), [PodEntry(A, "gpu")]
        )
    scorer = PrecisePrefixCacheScorer("ppc", index, 16, "", tokenizer)
    eps = [endpoint(1), endpoint(2)]
    by_text = await scorer.score(RouterRequest("r", "m", False, prompt_text=text), eps)
    by_chat = await scorer.score(RouterRequest("r", "m", True, messages=messages), eps)
    full_blocks = len(BuiltinTokenizer().encode(text)) // 16
    assert by_text.scores == {A: 1.0, B: 0.0} and by_text.hit_tokens[A] == full_blocks * 16
    assert by_chat.scores == {A: 1.0, B: 0.0}


def test_metrics_parsing_reads_vllm_names_deprecated_usage_and_cache_info():
    from kvbench.emulator.router.endpoints import parse_metrics

    text = """# HELP vllm:num_requests_waiting Number of requests waiting.
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="1",model_name="m"} 2.0
vllm:num_requests_running{engine="0",model_name="m"} 7.0
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:cache_config_info{block_size="64",cache_dtype="auto",engine="0",num_gpu_blocks="9271"} 1.0
"""
    metrics = parse_metrics(text)
    assert (metrics.waiting_requests, metrics.running_requests, metrics.kv_cache_usage) == (
        5,
        7,
        0.5,
    )
    assert (metrics.block_size_tokens, metrics.num_gpu_blocks) == (64, 9271)
    both = parse_metrics(
        'vllm:kv_cache_usage_perc{engine="0"} 0.25\nvllm:gpu_cache_usage_perc{engine="0"} 0.9\n'
    )
    assert both.kv_cache_usage == 0.25  # the current name wins over the deprecated one


def test_request_parsing_accepts_openai_prompt_shapes_and_rejects_others():
    from kvbench.emulator.router.request import BadRequest, parse_request

    assert parse_request({"model": "m", "prompt": [[5, 6]]}, "r", False).prompt_token_ids == [5, 6]
    assert (
        parse_request({"model": "m", "prompt": ["hi"], "cache_salt": "s"}, "r", False).prompt_text
        == "hi"
    )
    assert parse_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}, "r", True
    ).messages
    for body in (
        {"prompt": "x"},
        {"model": "m", "prompt": [True, 2]},
        {"model": "m", "prompt": [1.5]},
        {"model": "m", "messages": "x"},
    ):
        with pytest.raises(BadRequest):
            parse_request(body, "r", "messages" in body)


def test_block_keys_through_a_shared_memo_equal_the_plain_chain_and_the_engines_hashes():
    from kvbench.emulator.engine.hashing import BlockHasher, HashMemo, get_hash_fn
    from kvbench.emulator.router.precise import block_keys, sha256_cbor

    memo = HashMemo(max_entries=7)
    engine_fn = get_hash_fn("sha256_cbor")
    prefix = list(range(1000, 1064))
    for tail in ([5] * 40, [9, 8] * 30, []):
        tokens = prefix + tail
        plain = block_keys(tokens, 16, "42")
        assert block_keys(tokens, 16, "42", memo) == plain
        engine_hashes: list[bytes] = []  # the engine, sharing the memo, keys its blocks alike
        BlockHasher(engine_fn, sha256_cbor("42"), 16, memo).extend(tokens, engine_hashes, None)
        assert [int.from_bytes(h[24:], "big") for h in engine_hashes] == plain
    assert 0 < len(memo.table(engine_fn)) <= 7


def _key_by_key_scores(holders_per_key, candidates):
    """The plain LongestPrefix walk, one key at a time."""
    scores, matched, active = {}, {}, set(candidates)
    for holders in holders_per_key:
        active &= holders.keys()
        if not active:
            break
        for pod in active:
            weight = max(TIER_WEIGHTS.get(t, 0.8) for t in holders[pod])
            scores[pod] = scores.get(pod, 0.0) + weight
            matched[pod] = matched.get(pod, 0) + 1
    return scores, matched


@pytest.mark.parametrize("seed", range(30))
def test_longest_prefix_runs_of_shared_holders_score_as_key_by_key(seed):
    rng = random.Random(seed)
    pods = [f"p{i}" for i in range(rng.randrange(1, 6))]
    tiers = ["gpu", "cpu", "disk"]
    shapes = []
    for _ in range(4):  # a few holders objects, shared by runs of keys (as the index shares them)
        chosen = rng.sample(pods, rng.randrange(1, len(pods) + 1))
        shapes.append({p: set(rng.sample(tiers, rng.randrange(1, 3))) for p in chosen})
    holders_per_key = []
    for _ in range(rng.randrange(0, 40)):
        shape = rng.choice(shapes)
        holders_per_key += [shape if rng.random() < 0.7 else dict(shape)] * rng.randrange(1, 9)
    candidates = set(rng.sample(pods, rng.randrange(1, len(pods) + 1)))
    got = longest_prefix_scores(holders_per_key, candidates)
    expected = _key_by_key_scores(holders_per_key, candidates)
    assert got == expected
    assert list(got[0]) == list(expected[0])  # the same pod order
