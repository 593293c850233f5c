"""Offload demonstration: does KV offload raise prefix hits and cut TTFT when the GPU is too small?

Runs the real emulated engine (Qwen3-8B on H100-SXM, cost model, virtual time) on closed-loop
multi-turn conversations that share a system prompt. Each turn's prompt is the whole history (previous
prompts and the engine's own outputs) plus a new user message; the next turn is sent a fixed think
time after the previous one finished. Two regimes:
- "over_gpu": the conversations' working set is ~2x the GPU KV capacity, under the CPU tier's;
- "fits_gpu": the working set fits in the GPU KV cache.
Scenarios: no-offload, native OffloadingConnector, LMCache local CPU, LMCache + real Redis (with the
same CPU tier, and with a CPU tier too small to matter, so that Redis serves the hits).
Prints a table and writes benchmarks/results/offload_demo.json. Emulated numbers, not measurements.

Usage: .venv/bin/python benchmarks/offload_demo.py
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.interface import EngineArgs, EngineRequest, StepResult
from kvbench.emulator.engine.virtual import VirtualDriver
from kvbench.emulator.stores import KVStoreServer

MODEL, HARDWARE = "Qwen/Qwen3-8B", "H100-SXM"
KV_BYTES_PER_TOKEN = 147_456
NUM_GPU_BLOCKS = 1000  # 16,000 tokens of GPU KV cache
SYSTEM_TOKENS, DOC_TOKENS, USER_TOKENS, OUTPUT_TOKENS, TURNS = 512, 1024, 128, 64, 8
THINK_S = 2.0
CPU_TOKENS = 64_000  # CPU tier capacity (both connectors)
RESULTS = Path(__file__).parent / "results" / "offload_demo.json"


def scenarios(redis_url: str) -> dict[str, dict | None]:
    lmcache = {"lmcache.max_local_cpu_size": CPU_TOKENS * KV_BYTES_PER_TOKEN / 1024**3}
    return {
        "no-offload": None,
        "native-offload": {
            "kv_connector": "OffloadingConnector",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {"num_cpu_blocks": CPU_TOKENS // 16},
        },
        "lmcache-local": {
            "kv_connector": "LMCacheConnectorV1",
            "kv_role": "kv_both",
            "kv_connector_extra_config": lmcache,
        },
        "lmcache-redis": {
            "kv_connector": "LMCacheConnectorV1",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {**lmcache, "lmcache.remote_url": redis_url},
        },
        # a CPU tier of 4,096 tokens: most hits must come from Redis (real round trips)
        "lmcache-redis-small-cpu": {
            "kv_connector": "LMCacheConnectorV1",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {
                "lmcache.max_local_cpu_size": 4096 * KV_BYTES_PER_TOKEN / 1024**3,
                "lmcache.remote_url": redis_url,
            },
        },
    }


@dataclass
class Conversation:
    history: list[int]
    turn: int = 0


@dataclass
class Tally:
    ttft_s: dict[int, list[float]] = field(default_factory=dict)  # by turn index
    prompt_tokens: int = 0
    cached_tokens: int = 0
    gpu_tokens: int = 0
    cpu_tokens: int = 0
    remote_tokens: int = 0


class ClosedLoop:
    """Submits each conversation's next turn THINK_S after its previous turn finished."""

    def __init__(self, driver: VirtualDriver, num_conversations: int, rng: random.Random) -> None:
        self.driver, self.rng, self.tally = driver, rng, Tally()
        system = [rng.randrange(10, 150_000) for _ in range(SYSTEM_TOKENS)]
        self.convs = {
            f"c{i}": Conversation(system + self._tokens(DOC_TOKENS))
            for i in range(num_conversations)
        }
        self.arrival_s: dict[str, float] = {}
        self.outputs: dict[str, list[int]] = {}
        for i, conv_id in enumerate(self.convs):
            self._submit(conv_id, 0.05 * i)

    def _tokens(self, n: int) -> list[int]:
        return [self.rng.randrange(10, 150_000) for _ in range(n)]

    def _submit(self, conv_id: str, at_s: float) -> None:
        conv = self.convs[conv_id]
        conv.history = conv.history + self._tokens(USER_TOKENS)
        request_id = f"{conv_id}-t{conv.turn}"
        self.arrival_s[request_id] = at_s
        self.outputs[request_id] = []
        self.driver.submit(
            EngineRequest(
                request_id,
                list(conv.history),
                OUTPUT_TOKENS,
                at_s,
                ignore_eos=True,
                sampling_seed=hash(request_id) & 0xFFFF,
            )
        )

    def on_step(self, start_s: float, result: StepResult) -> None:
        done_s = start_s + result.duration_s
        for out in result.outputs:
            tokens = self.outputs[out.request_id]
            if not tokens and out.new_token_ids:
                conv_id, turn = out.request_id.split("-t")
                self.tally.ttft_s.setdefault(int(turn), []).append(
                    done_s - self.arrival_s[out.request_id]
                )
            tokens.extend(out.new_token_ids)
            if out.finished:
                self._finish(out, done_s)

    def _finish(self, out, done_s: float) -> None:
        tally = self.tally
        tally.prompt_tokens += out.num_prompt_tokens
        tally.cached_tokens += out.num_cached_tokens
        tally.gpu_tokens += out.hits.gpu_tokens
        tally.cpu_tokens += out.hits.cpu_tokens
        tally.remote_tokens += out.hits.remote_tokens
        conv_id = out.request_id.split("-t")[0]
        conv = self.convs[conv_id]
        conv.history = conv.history + self.outputs[out.request_id]
        conv.turn += 1
        if conv.turn < TURNS:
            self._submit(conv_id, done_s + THINK_S)


def run_cell(kv_transfer_config: dict | None, num_conversations: int) -> dict:
    args = EngineArgs(
        model=MODEL,
        hardware=HARDWARE,
        num_gpu_blocks_override=NUM_GPU_BLOCKS,
        max_model_len=4096,
        kv_transfer_config=kv_transfer_config,
        env={"PYTHONHASHSEED": "0"},
    )
    engine = build_engine(args)
    driver = VirtualDriver(engine)
    loop = ClosedLoop(driver, num_conversations, random.Random(7))
    driver.on_step = loop.on_step
    wall_start = time.perf_counter()
    run = driver.run()
    tally, stats = loop.tally, engine.stats()
    later = [t for turn, values in tally.ttft_s.items() if turn >= 1 for t in values]
    return {
        "requests": sum(len(v) for v in tally.ttft_s.values()),
        "mean_ttft_ms_turn0": 1000 * statistics.mean(tally.ttft_s[0]),
        "mean_ttft_ms_later_turns": 1000 * statistics.mean(later),
        "p90_ttft_ms_later_turns": 1000 * statistics.quantiles(later, n=10)[-1],
        "prompt_hit_rate": tally.cached_tokens / tally.prompt_tokens,
        "hit_tokens": {
            "gpu": tally.gpu_tokens,
            "cpu": tally.cpu_tokens,
            "remote": tally.remote_tokens,
        },
        "num_preemptions": stats.num_preemptions,
        "virtual_duration_s": run.end_s,
        "wall_s": time.perf_counter() - wall_start,
        "connector_metrics": {k: v for k, v in stats.connector_metrics.items() if v},
    }


def main() -> None:
    working_set = lambda n: SYSTEM_TOKENS + n * (DOC_TOKENS + TURNS * (USER_TOKENS + OUTPUT_TOKENS))  # noqa: E731
    regimes = {"over_gpu": 12, "fits_gpu": 4}
    results: dict = {
        "model": MODEL,
        "hardware": HARDWARE,
        "emulated": True,
        "gpu_kv_tokens": NUM_GPU_BLOCKS * 16,
        "cpu_tier_tokens": CPU_TOKENS,
        "regimes": {},
    }
    with KVStoreServer("redis") as redis_server:
        for regime, num_conv in regimes.items():
            cells = {}
            for name, cfg in scenarios(redis_server.url).items():
                redis_server_flush(redis_server)
                cells[name] = run_cell(cfg, num_conv)
            results["regimes"][regime] = {
                "conversations": num_conv,
                "working_set_tokens": working_set(num_conv),
                "cells": cells,
            }
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


def redis_server_flush(server: KVStoreServer) -> None:
    import redis

    redis.Redis.from_url(server.redis_url).flushall()


def print_table(results: dict) -> None:
    print(
        f"{MODEL} on {HARDWARE} (emulated), GPU KV {results['gpu_kv_tokens']} tokens, CPU tier {CPU_TOKENS} tokens"
    )
    for regime, data in results["regimes"].items():
        print(
            f"\n{regime}: {data['conversations']} conversations, working set {data['working_set_tokens']} tokens"
        )
        print(
            f"{'scenario':24} {'hit rate':>8} {'TTFT t0 ms':>10} {'TTFT t>0 ms':>11} {'p90 t>0':>8} {'gpu/cpu/remote hit tokens':>28}"
        )
        for name, cell in data["cells"].items():
            hits = cell["hit_tokens"]
            print(
                f"{name:24} {cell['prompt_hit_rate']:8.3f} {cell['mean_ttft_ms_turn0']:10.1f} "
                f"{cell['mean_ttft_ms_later_turns']:11.1f} {cell['p90_ttft_ms_later_turns']:8.1f} "
                f"{hits['gpu']:>10}/{hits['cpu']}/{hits['remote']}"
            )


if __name__ == "__main__":
    main()
