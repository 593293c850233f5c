"""Throughput of one emulated engine process behind its HTTP front (a benchmark, not a test).

Starts `kvbench emulate serve` as its own process on a free loopback port, drives it from a
separate client process (lean aiohttp streaming client, fixed concurrency, token-id prompts),
and reports over a fixed measurement window:
- streamed output tokens/s (from the usage chunks of finished requests, plus tokens counted in
  the chunks of requests still running at the window's end),
- engine-process CPU seconds (psutil) and tokens per engine CPU-second ("per core"),
- step-deadline lag p50/p99/max from the engine's own /metrics
  (`kvbench:engine_step_lag_seconds` bucket deltas over the window, linear within a bucket).
Goal: >= 20,000 streamed tokens/s on one core with lag p99 < 2 ms. Results go to
benchmarks/results/emulator_http_throughput.json.

Usage: .venv/bin/python benchmarks/emulator/http_throughput.py [--concurrency 256]
       [--stream-interval 1] [--duration-s 15] [--prompt-tokens 128] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
LAG = "kvbench:engine_step_lag_seconds"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lag_buckets(text: str) -> dict[float, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == LAG:
            for s in family.samples:
                if s.name == LAG + "_bucket":
                    out[float(s.labels["le"])] = s.value
    return out


def _scalar(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                return s.value
    return float("nan")


def _quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return float("nan")
    target, prev_bound, prev_count = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= target:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (target - prev_count) / max(
                count - prev_count, 1e-12
            )
        prev_bound, prev_count = bound, count
    return bounds[-2]


async def _one_request(session, url, prompt_tokens, max_tokens, rng, counts) -> None:
    body = {
        "model": "Qwen/Qwen3-0.6B",
        "prompt": [rng.randrange(1000, 100000) for _ in range(prompt_tokens)],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }
    async with session.post(url, json=body) as resp:
        async for line in resp.content:
            if line.startswith(b"data: {") and b'"token_ids":[' in line:
                chunk = line[line.index(b'"token_ids":[') + 13 :]
                counts["tokens"] += chunk[: chunk.index(b"]")].count(b",") + 1
    counts["requests"] += 1


async def _client(
    url: str,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    prompt_tokens: int,
    max_tokens: int,
    result_queue,
) -> None:
    rng = random.Random(0)
    counts = {"tokens": 0, "requests": 0}
    stop_at = time.monotonic() + warmup_s + duration_s

    async def worker(session):
        while time.monotonic() < stop_at:
            await _one_request(session, url, prompt_tokens, max_tokens, rng, counts)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        await asyncio.sleep(warmup_s)
        start = dict(counts)
        result_queue.put(("window_start", time.monotonic()))
        await asyncio.sleep(duration_s)
        result_queue.put(
            (
                "window_end",
                time.monotonic(),
                counts["tokens"] - start["tokens"],
                counts["requests"] - start["requests"],
            )
        )
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _client_main(*args) -> None:
    os.nice(5)  # the engine under test gets the CPU first when the host is contended
    asyncio.run(_client(*args))


def _scrape(base: str) -> str:
    import urllib.request

    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def run(args) -> dict:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "kvbench.emulator.api.serve",
        "Qwen/Qwen3-0.6B",
        "--hardware",
        "H100-SXM",
        "--port",
        str(port),
        "--max-num-seqs",
        str(args.concurrency),
        "--stream-interval",
        str(args.stream_interval),
    ]
    server = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"}
    )
    try:
        ready = server.stdout.readline()
        if "ready on" not in ready:
            raise RuntimeError(f"engine did not start: {ready!r}")
        base = f"http://127.0.0.1:{port}"
        engine_proc = psutil.Process(server.pid)
        queue: mp.Queue = mp.Queue()
        client = mp.Process(
            target=_client_main,
            args=(
                base + "/v1/completions",
                args.concurrency,
                args.warmup_s,
                args.duration_s,
                args.prompt_tokens,
                args.max_tokens,
                queue,
            ),
        )
        client.start()
        _, window_start = queue.get(timeout=120)
        cpu0, metrics0 = engine_proc.cpu_times(), _scrape(base)
        _, window_end, tokens, requests = queue.get(timeout=args.duration_s + 120)
        cpu1, metrics1 = engine_proc.cpu_times(), _scrape(base)
        client.join(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    wall_s = window_end - window_start
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    lag0, lag1 = _lag_buckets(metrics0), _lag_buckets(metrics1)
    return {
        "benchmark": "emulator_http_throughput",
        "model": "Qwen/Qwen3-0.6B",
        "hardware": "H100-SXM (emulated)",
        "host_cpus": os.cpu_count(),
        "concurrency": args.concurrency,
        "stream_interval": args.stream_interval,
        "prompt_tokens": args.prompt_tokens,
        "max_tokens": args.max_tokens,
        "window_s": round(wall_s, 3),
        "output_tokens": tokens,
        "requests_finished": requests,
        "output_tokens_per_s": round(tokens / wall_s, 1),
        "engine_cpu_s": round(cpu_s, 3),
        "engine_cpu_utilisation": round(cpu_s / wall_s, 3),
        "output_tokens_per_engine_cpu_s": round(tokens / cpu_s, 1) if cpu_s else None,
        "step_lag_p50_ms": round(1000 * _quantile(lag0, lag1, 0.50), 3),
        "step_lag_p99_ms": round(1000 * _quantile(lag0, lag1, 0.99), 3),
        "step_lag_max_ms_since_start": round(
            1000 * _scalar(metrics1, "kvbench:engine_step_lag_max_seconds"), 3
        ),
        "steps_in_window": _scalar(metrics1, "kvbench:engine_steps_total")
        - _scalar(metrics0, "kvbench:engine_steps_total"),
        "running_at_end": _scalar(metrics1, "vllm:num_requests_running"),
        "host_load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--stream-interval", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/emulator_http_throughput.json"
    )
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2))
    previous = json.loads(args.out.read_text()) if args.out.exists() else []
    runs = previous if isinstance(previous, list) else [previous]
    args.out.write_text(
        json.dumps(runs + [{**result, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}], indent=2)
    )


if __name__ == "__main__":
    main()
