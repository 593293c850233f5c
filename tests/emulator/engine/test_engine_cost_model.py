"""Cost model and KV capacity against hand-computed numbers; catalog facts."""

from __future__ import annotations

import pytest

from kvbench.emulator.engine.cost_model import CostModel, CostParams, num_gpu_blocks_by_memory
from kvbench.emulator.engine.scheduler import StepWork
from kvbench.errors import UserError
from kvbench.spec.catalogs import HardwareProfile, ModelProfile, get_hardware, get_model

# A model small enough to compute by hand.
HAND_MODEL = ModelProfile(
    name="hand",
    num_layers=2,
    hidden_size=128,
    num_attention_heads=2,
    num_kv_heads=1,
    head_dim=64,
    intermediate_size=256,
    vocab_size=1000,
    max_context_tokens=4096,
)
HAND_GPU = HardwareProfile(
    name="hand-gpu",
    bf16_flops_per_s=1e12,
    hbm_gib=1.0,
    hbm_bytes_per_s=1e9,
    host_link_bytes_per_s=1e9,
    tp_link_bytes_per_s=1e9,
)
PARAMS = CostParams(
    linear_efficiency=1.0,
    attention_efficiency=1.0,
    weight_memory_efficiency=1.0,
    kv_memory_efficiency=0.5,
    step_overhead_s=1e-3,
    per_request_overhead_s=0.0,
    allreduce_latency_s=1e-5,
    non_torch_bytes=0,
)
# One request prefilling 10 tokens from an empty context, sampling one token.
WORK = StepWork(
    num_reqs=1,
    num_tokens=10,
    num_sampled=1,
    attended_pairs=55,
    kv_tokens_read=10,
    num_kv_tokens_written=10,
)


def test_hand_model_derived_sizes():
    # per layer: q 128x128, k,v 128x64 each, o 128x128, mlp 3x128x256
    assert HAND_MODEL.linear_params_per_layer == 16384 + 2 * 8192 + 16384 + 98304 == 147456
    assert HAND_MODEL.kv_bytes_per_token == 2 * 2 * 1 * 64 * 2 == 512
    # linear bf16 + (embedding + lm_head + norms (5x128 + 4x64)) in bf16
    assert HAND_MODEL.weight_bytes == 2 * 294912 + 2 * (256000 + 896) == 1103616
    # a step streams everything but the (untied) input embedding table
    assert HAND_MODEL.streamed_weight_bytes == 1103616 - 2 * 128000 == 847616


def test_step_time_single_gpu_is_memory_bound_plus_overhead():
    cost = CostModel(HAND_MODEL, HAND_GPU, 1, PARAMS).step_cost(WORK)
    flops = 2 * 294912 * 10 + 2 * 128 * 1000 + 4 * 2 * 2 * 64 * 55  # linear + lm_head + attention
    assert cost.compute_s == pytest.approx(flops / 1e12)
    # weights at 1.0 x 1 GB/s, 20 KV tokens (10 read, 10 written) at 0.5 x 1 GB/s
    assert cost.memory_s == pytest.approx(847616 / 1e9 + 512 * 20 / 0.5e9)
    assert cost.allreduce_s == 0.0
    assert cost.duration_s == pytest.approx(868096 / 1e9 + 1e-3)


def test_tensor_parallel_splits_work_and_adds_ring_all_reduce():
    cost = CostModel(HAND_MODEL, HAND_GPU, 2, PARAMS).step_cost(WORK)
    assert cost.memory_s == pytest.approx(868096 / 2 / 1e9)
    # 2 all-reduces per layer, each latency + 2(tp-1)/tp x tokens x hidden x 2 B / link
    per_call_s = 1e-5 + 2 * (1 / 2) * 10 * 128 * 2 / 1e9
    assert cost.allreduce_s == pytest.approx(4 * per_call_s)


def test_big_prefill_is_compute_bound_on_h100():
    model, gpu = get_model("Qwen/Qwen3-8B"), get_hardware("H100-SXM")
    prefill = StepWork(
        num_reqs=1,
        num_tokens=8192,
        num_sampled=1,
        attended_pairs=8192 * 8193 // 2,
        kv_tokens_read=8192,
        num_kv_tokens_written=8192,
    )
    cost = CostModel(model, gpu).step_cost(prefill)
    assert cost.compute_s > cost.memory_s
    decode = StepWork(
        num_reqs=1,
        num_tokens=1,
        num_sampled=1,
        attended_pairs=2049,
        kv_tokens_read=2049,
        num_kv_tokens_written=1,
    )
    cost = CostModel(model, gpu).step_cost(decode)
    assert cost.memory_s > cost.compute_s


def test_kv_capacity_follows_vllms_rule():
    # 0.5 x 1 GiB - weights - activations(4 tokens, 2 seqs) over 16-token blocks of 512 B/token
    activations = 4 * 2 * 256 * 2 + 4 * 128 * 4 * 2 + 2 * 1000 * 4
    available = 0.5 * 2**30 - 1103616 - activations
    expected = int(available // (16 * 512))
    assert num_gpu_blocks_by_memory(HAND_MODEL, HAND_GPU, 1, 16, 0.5, 4, 2, PARAMS) == expected
    # TP=2 halves weights and per-GPU block bytes
    available_tp2 = 0.5 * 2**30 - 1103616 / 2 - (4 * 2 * 128 * 2 + 4 * 128 * 4 * 2 + 2 * 1000 * 4)
    assert num_gpu_blocks_by_memory(HAND_MODEL, HAND_GPU, 2, 16, 0.5, 4, 2, PARAMS) == int(
        available_tp2 // (16 * 256)
    )


@pytest.mark.parametrize(
    "name, kv_bytes",
    [
        ("Qwen/Qwen3-0.6B", 114688),
        ("Qwen/Qwen3-8B", 147456),
        ("Qwen/Qwen3-14B", 163840),
        ("Qwen/Qwen3-32B", 262144),
        ("Qwen/Qwen3-32B-AWQ", 262144),
    ],
)
def test_catalog_kv_bytes_per_token(name, kv_bytes):
    assert get_model(name).kv_bytes_per_token == kv_bytes


def test_catalog_weights_match_published_parameter_counts():
    assert get_model("Qwen/Qwen3-8B").weight_bytes == pytest.approx(2 * 8.19e9, rel=0.01)
    assert get_model("Qwen/Qwen3-32B").weight_bytes == pytest.approx(2 * 32.8e9, rel=0.01)
    awq = get_model("Qwen/Qwen3-32B-AWQ").weight_bytes
    assert (
        0.25 < awq / get_model("Qwen/Qwen3-32B").weight_bytes < 0.35
    )  # 4-bit linear, bf16 embeddings
    tiny = get_model("kvbench/tiny-qwen3")
    assert (
        tiny.num_layers,
        tiny.hidden_size,
        tiny.num_kv_heads,
        tiny.head_dim,
        tiny.vocab_size,
    ) == (2, 256, 2, 64, 4096)


def test_catalog_h100_uses_the_projects_measurements():
    h100 = get_hardware("H100-SXM")
    assert (h100.host_link_bytes_per_s, h100.bf16_flops_per_s, h100.hbm_bytes_per_s) == (
        55e9,
        800e12,
        3e12,
    )
    assert (
        get_hardware("L40S").tp_link_bytes_per_s == get_hardware("L40S").host_link_bytes_per_s
    )  # PCIe


def test_unknown_catalog_names_list_the_known_ones():
    with pytest.raises(UserError, match="known: .*Qwen/Qwen3-8B"):
        get_model("Qwen/Qwen3-9B")
    with pytest.raises(UserError, match="--hardware.*H100-SXM"):
        get_hardware("B200")


def test_kv_capacity_matches_the_published_vllm_block_count():
    # llm-d tiered-prefix-cache guide: Qwen3-32B, TP 2, H100 80GB, gpu_memory_utilization 0.65 ->
    # 9,271 GPU blocks per engine (vLLM's log); vLLM 0.11 defaults 8192 batched tokens, 1024 seqs.
    blocks = num_gpu_blocks_by_memory(
        get_model("Qwen/Qwen3-32B"), get_hardware("H100-SXM"), 2, 16, 0.65, 8192, 1024
    )
    assert blocks == pytest.approx(9271, rel=0.005)


def _first_step_s(per_token_s: float, prompts: list[list[int]]) -> list[tuple[float, int]]:
    """Each prompt run alone to its end on one engine: its first step's duration, its cached
    tokens."""
    import dataclasses

    from engine_testlib import make_engine, make_request

    engine = make_engine()
    engine.cost.params = dataclasses.replace(
        engine.cost.params, prefill_overhead_per_prompt_token_s=per_token_s, cpu_overlap=False
    )
    firsts = []
    for i, prompt in enumerate(prompts):
        engine.add_request(make_request(f"r{i}", prompt, max_tokens=2))
        step = engine.step(0.0)
        firsts.append((step.duration_s, step.outputs[0].num_cached_tokens))
        while engine.has_unfinished_requests():
            engine.step(0.0)
    return firsts


def test_a_prefill_start_costs_per_token_of_the_whole_prompt_cached_tokens_included():
    cold = list(range(100, 164))  # 64 tokens: 4 blocks
    warm = cold[:48] + list(range(500, 516))  # 3 blocks of it cached, 16 new tokens
    plain = _first_step_s(0.0, [cold, warm])
    costed = _first_step_s(2e-5, [cold, warm])
    assert [cached for _, cached in plain] == [0, 48]
    assert costed[0][0] - plain[0][0] == pytest.approx(64 * 2e-5)
    assert costed[1][0] - plain[1][0] == pytest.approx(64 * 2e-5)  # its 48 cached tokens count
