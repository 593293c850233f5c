"""The cost model's step times beside the pure roofline bounds (no efficiency factors, overheads or
all-reduce), for a few canonical steps. Prints a table and writes JSON to benchmarks/results/.

Default: Qwen3-8B on H100-SXM, TP 1: decode at batch 1, 64, 256 with 2k context each; prefill of
one 2k and one 8k prompt from an empty cache.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kvbench.emulator.engine.cost_model import CostModel
from kvbench.emulator.engine.scheduler import StepWork
from kvbench.spec.catalogs import get_hardware, get_model


def decode_work(batch: int, context_tokens: int) -> StepWork:
    """`batch` requests, each with `context_tokens` computed, each computing one new token."""
    return StepWork(
        num_reqs=batch,
        num_tokens=batch,
        num_sampled=batch,
        attended_pairs=batch * (context_tokens + 1),
        kv_tokens_read=batch * (context_tokens + 1),
        num_kv_tokens_written=batch,
    )


def prefill_work(prompt_tokens: int) -> StepWork:
    return StepWork(
        num_reqs=1,
        num_tokens=prompt_tokens,
        num_sampled=1,
        attended_pairs=prompt_tokens * (prompt_tokens + 1) // 2,
        kv_tokens_read=prompt_tokens,
        num_kv_tokens_written=prompt_tokens,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Qwen/Qwen3-8B")
    parser.add_argument("--hardware", default="H100-SXM")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/cost_model.json")
    parser.add_argument(
        "--measured",
        default="benchmarks/results/cost_model_gpu_measure_h100.json",
        help="cost_model_gpu_measure.py output to print beside (same model/hardware only)",
    )
    args = parser.parse_args()
    measured_ms = {}
    if (
        args.model == "Qwen/Qwen3-8B"
        and args.hardware == "H100-SXM"
        and args.tp == 1
        and Path(args.measured).exists()
    ):
        measured_ms = {
            c["case"]: c["measured_ms"]
            for c in json.loads(Path(args.measured).read_text())["cases"]
        }
    model, hardware = get_model(args.model), get_hardware(args.hardware)
    cost_model = CostModel(model, hardware, args.tp)
    cases = {f"decode batch {b}, ctx 2048": decode_work(b, 2048) for b in (1, 64, 256)}
    cases.update({f"prefill {n} tokens": prefill_work(n) for n in (2048, 8192)})
    rows = []
    print(f"{args.model} on {args.tp} x {args.hardware}")
    print(
        f"{'case':<28}{'model ms':>10}{'roofline ms':>13}{'compute ms':>12}{'memory ms':>11}"
        f"{'GPU kernels ms':>16}{'tok/s':>10}"
    )
    for name, work in cases.items():
        cost = cost_model.step_cost(work)
        bound_s = cost_model.roofline_bound_s(work)
        tokens_per_s = (
            work.num_sampled if work.num_sampled > 1 else work.num_tokens
        ) / cost.duration_s
        rows.append(
            {
                "case": name,
                "step_ms": cost.duration_s * 1e3,
                "roofline_ms": bound_s * 1e3,
                "compute_ms": cost.compute_s * 1e3,
                "memory_ms": cost.memory_s * 1e3,
                "allreduce_ms": cost.allreduce_s * 1e3,
                "overhead_ms": cost.overhead_s * 1e3,
                "tokens_per_s": tokens_per_s,
                "measured_kernels_ms": measured_ms.get(name),
            }
        )
        measured = f"{measured_ms[name]:>16.2f}" if name in measured_ms else f"{'-':>16}"
        print(
            f"{name:<28}{cost.duration_s * 1e3:>10.2f}{bound_s * 1e3:>13.2f}{cost.compute_s * 1e3:>12.2f}"
            f"{cost.memory_s * 1e3:>11.2f}{measured}{tokens_per_s:>10,.0f}"
        )
    if measured_ms:
        print(
            "GPU kernels ms: measured on the project's H100 (torch, CUDA graph; no norms/sampling/overhead):"
            " compare with max(compute, memory)"
        )
    result = {
        "benchmark": "cost_model",
        "model": args.model,
        "hardware": args.hardware,
        "tensor_parallel_size": args.tp,
        "params": cost_model.params.__repr__(),
        "cases": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
