"""Measure, on a real GPU with torch, the forward-pass work the cost model prices, for Qwen3-8B
shapes: the linear layers (qkv, o, gate+up, down of 36 layers, one weight copy per layer so weights
stream from HBM), the lm_head for sampled tokens, and attention (torch SDPA, GQA, causal prefill /
decode over a 2k context), eager and as one CUDA graph per step (as vLLM runs it). Norms, RoPE,
activations, sampling and framework overhead are not included: compare with the cost model's
max(compute, memory) part, not its fixed overheads.

Run on the device machine (needs torch with CUDA):
    python benchmarks/emulator/cost_model_gpu_measure.py --out $OUT/cost_model_gpu_measure.json
Then `python benchmarks/emulator/cost_model.py --measured FILE` prints both side by side.
"""

from __future__ import annotations

import argparse
import functools
import json

import torch
import torch.nn.functional as F

# Qwen3-8B (spec/catalog/models.yaml)
LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER, VOCAB = 36, 4096, 32, 8, 128, 12288, 151936


def make_weights(device: str) -> list[tuple[torch.Tensor, ...]]:
    q_out, kv_out = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    layers = []
    for _ in range(LAYERS):
        layers.append(
            (
                torch.randn(HIDDEN, q_out + 2 * kv_out, device=device, dtype=torch.bfloat16) * 0.02,
                torch.randn(q_out, HIDDEN, device=device, dtype=torch.bfloat16) * 0.02,
                torch.randn(HIDDEN, 2 * INTER, device=device, dtype=torch.bfloat16) * 0.02,
                torch.randn(INTER, HIDDEN, device=device, dtype=torch.bfloat16) * 0.02,
            )
        )
    return layers


def forward(layers, lm_head, kv_bufs, x: torch.Tensor, num_reqs: int, new_tokens: int) -> None:
    """One step: num_reqs requests, each computing new_tokens (x: their hidden states)."""
    tokens = num_reqs * new_tokens
    q_out, _kv_out = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for index, (w_qkv, w_o, w_gate_up, w_down) in enumerate(layers):
        qkv = x @ w_qkv
        q = qkv[:, :q_out].view(num_reqs, new_tokens, HEADS, HEAD_DIM).transpose(1, 2)
        k_cache, v_cache = kv_bufs[index % len(kv_bufs)]
        attn = F.scaled_dot_product_attention(
            q, k_cache, v_cache, is_causal=new_tokens > 1, enable_gqa=True
        )
        x = attn.transpose(1, 2).reshape(tokens, q_out) @ w_o
        gate_up = x @ w_gate_up
        x = (gate_up[:, :INTER] * gate_up[:, INTER:]) @ w_down
    _ = x.view(num_reqs, new_tokens, HIDDEN)[:, -1, :] @ lm_head


def time_case(
    layers, lm_head, num_reqs: int, new_tokens: int, context: int, repeats: int, cuda_graph: bool
) -> float:
    kv_len = context + new_tokens
    kv_bufs = [
        (
            torch.randn(num_reqs, KV_HEADS, kv_len, HEAD_DIM, device="cuda", dtype=torch.bfloat16),
            torch.randn(num_reqs, KV_HEADS, kv_len, HEAD_DIM, device="cuda", dtype=torch.bfloat16),
        )
        for _ in range(min(4, LAYERS))
    ]
    x = torch.randn(num_reqs * new_tokens, HIDDEN, device="cuda", dtype=torch.bfloat16)
    step = functools.partial(forward, layers, lm_head, kv_bufs, x, num_reqs, new_tokens)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    if cuda_graph:  # as vLLM runs decode: one graph launch per step, no per-kernel launch gaps
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        step = graph.replay
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        step()
    end.record()
    torch.cuda.synchronize()
    del step, kv_bufs
    return start.elapsed_time(end) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/cost_model_gpu_measure.json")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    layers = make_weights("cuda")
    lm_head = torch.randn(HIDDEN, VOCAB, device="cuda", dtype=torch.bfloat16) * 0.02
    cases = {f"decode batch {b}, ctx 2048": (b, 1, 2048) for b in (1, 64, 256)}
    cases.update({f"prefill {n} tokens": (1, n, 0) for n in (2048, 8192)})
    rows = []
    for name, (num_reqs, new_tokens, context) in cases.items():
        eager_ms = time_case(
            layers, lm_head, num_reqs, new_tokens, context, args.repeats, cuda_graph=False
        )
        graph_ms = time_case(
            layers, lm_head, num_reqs, new_tokens, context, args.repeats, cuda_graph=True
        )
        rows.append({"case": name, "measured_ms": graph_ms, "eager_ms": eager_ms})
        print(f"{name:<28}{graph_ms:>10.2f} ms (CUDA graph){eager_ms:>10.2f} ms (eager)")
    result = {
        "benchmark": "cost_model_gpu_measure",
        "model_shapes": "Qwen/Qwen3-8B",
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cases": rows,
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
