"""Engine speed on one core, in virtual time: steps/s and output tokens/s of wall-clock CPU work.

Closed loop at a fixed concurrency (default 256, Qwen3-0.6B on H100-SXM): every finished request
is replaced by a new one, so the engine stays at `concurrency` requests. Prompts share a prefix
(multi-turn-like) so the prefix cache, hashing and block churn are exercised. Bounded by
--steps and --max-wall-s. Prints a summary and writes JSON to benchmarks/results/.

Goal (for the HTTP layer on top): the engine alone should sustain well over 20,000 output tokens/s
per core.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.interface import EngineArgs, EngineRequest


def make_request(
    rng: random.Random,
    index: int,
    shared_prefix: list[int],
    prompt_tokens: int,
    output_tokens: int,
    now_s: float,
) -> EngineRequest:
    tail = [rng.randrange(151936) for _ in range(prompt_tokens - len(shared_prefix))]
    return EngineRequest(
        request_id=f"req-{index}",
        prompt_token_ids=shared_prefix + tail,
        max_tokens=output_tokens,
        arrival_s=now_s,
    )


def run(args: argparse.Namespace) -> dict:
    engine = build_engine(
        EngineArgs(
            model=args.model,
            hardware=args.hardware,
            max_num_seqs=args.concurrency,
            prefix_caching_hash_algo=args.hash_algo,
            env={"PYTHONHASHSEED": "0"},
            vllm_compat=args.vllm_compat,
        )
    )
    rng = random.Random(0)
    shared_prefix = [rng.randrange(151936) for _ in range(args.shared_prefix_tokens)]
    next_index, now_s = 0, 0.0
    for _ in range(args.concurrency):
        engine.add_request(
            make_request(
                rng, next_index, shared_prefix, args.prompt_tokens, args.output_tokens, now_s
            )
        )
        next_index += 1
    steps = output_tokens = scheduled_tokens = 0
    started = time.perf_counter()
    request_gen_s = 0.0
    while steps < args.steps and time.perf_counter() - started < args.max_wall_s:
        result = engine.step(now_s)
        now_s += result.duration_s
        steps += 1
        scheduled_tokens += result.num_scheduled_tokens
        for output in result.outputs:
            output_tokens += len(output.new_token_ids)
            if output.finished:
                t0 = time.perf_counter()
                engine.add_request(
                    make_request(
                        rng,
                        next_index,
                        shared_prefix,
                        args.prompt_tokens,
                        args.output_tokens,
                        now_s,
                    )
                )
                request_gen_s += time.perf_counter() - t0
                next_index += 1
    wall_s = (
        time.perf_counter() - started - request_gen_s
    )  # exclude the benchmark's own prompt making
    stats = engine.stats()
    return {
        "benchmark": "engine_throughput",
        "model": args.model,
        "hardware": args.hardware,
        "concurrency": args.concurrency,
        "prompt_tokens": args.prompt_tokens,
        "shared_prefix_tokens": args.shared_prefix_tokens,
        "output_tokens_per_request": args.output_tokens,
        "hash_algo": args.hash_algo,
        "vllm_compat": args.vllm_compat,
        "steps": steps,
        "wall_s": wall_s,
        "steps_per_wall_s": steps / wall_s,
        "output_tokens_per_wall_s": output_tokens / wall_s,
        "scheduled_tokens_per_wall_s": scheduled_tokens / wall_s,
        "virtual_s": now_s,
        "output_tokens_per_virtual_s": output_tokens / now_s if now_s else 0.0,
        "requests_finished": sum(stats.request_success.values()),
        "num_preemptions": stats.num_preemptions,
        "prefix_cache_hit_rate": stats.prefix_cache_hits / max(stats.prefix_cache_queries, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Qwen/Qwen3-0.6B")
    parser.add_argument("--hardware", default="H100-SXM")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--shared-prefix-tokens", type=int, default=768)
    parser.add_argument("--output-tokens", type=int, default=256)
    parser.add_argument("--hash-algo", default="sha256")
    parser.add_argument("--vllm-compat", default="0.11", choices=("0.11", "0.32"))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--max-wall-s", type=float, default=20.0)
    parser.add_argument("--out", default="benchmarks/results/engine_throughput.json")
    result = run(parser.parse_args())
    for key in (
        "steps",
        "wall_s",
        "steps_per_wall_s",
        "output_tokens_per_wall_s",
        "scheduled_tokens_per_wall_s",
        "output_tokens_per_virtual_s",
        "requests_finished",
        "prefix_cache_hit_rate",
    ):
        value = result[key]
        print(f"{key:>30}: {value:,.1f}" if isinstance(value, float) else f"{key:>30}: {value}")
    out = Path(parser.parse_args().out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
