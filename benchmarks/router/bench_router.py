"""Router performance: added latency through the proxy, and KV-block index lookup time.

1. Added latency: an open-loop client sends `--rates` requests/s (500 and 200) for `--duration-s`
   to a zero-delay upstream in its own process, once directly and once through the router (its
   own process, `kvbench emulate router`), with the precise scorer on an in-memory index and on a
   real Redis. Added latency = percentile(via router) - percentile(direct).
2. Ejection: time from an engine's death to the router marking it not ready (goal < 1 s).
3. Index lookup: a 10,000-token prompt (625 blocks of 16), all blocks held by 2 pods: time to
   compute the 625 request keys (sha256_cbor chain) and to look them up, in memory and in Redis.
Prints and writes benchmarks/results/router.json. Bounded: about a minute in all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from kvbench.emulator.router.endpoints import EndpointPool
from kvbench.emulator.router.index_memory import InMemoryIndex, PodEntry
from kvbench.emulator.router.index_redis import RedisIndex
from kvbench.emulator.router.precise import block_keys
from kvbench.emulator.stores import KVStoreServer, free_port

HERE = Path(__file__).parent
PYTHON = sys.executable
KVBENCH = str(Path(PYTHON).parent / "kvbench")
PROMPT_TOKENS = 512  # per proxied request (token ids): 32 blocks to key and look up

CONFIG = """
plugins:
- type: precise-prefix-cache-scorer
  parameters:
    tokenProcessorConfig: {{blockSize: 16, hashSeed: "42"}}
    indexerConfig: {{kvBlockIndexConfig: {index}}}
    kvEventsConfig: {{zmqEndpoint: "tcp://127.0.0.1:{zmq_port}"}}
- type: kv-cache-utilization-scorer
- type: queue-scorer
schedulingProfiles:
- name: default
  plugins:
  - {{pluginRef: precise-prefix-cache-scorer, weight: 2}}
  - {{pluginRef: kv-cache-utilization-scorer, weight: 1}}
  - {{pluginRef: queue-scorer, weight: 1}}
"""


async def wait_http(url: str, attempts: int = 200) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(attempts):
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def open_loop(url: str, rate: float, duration_s: float) -> tuple[list[float], dict[str, int]]:
    """Latency (s) of each ok request sent on an absolute schedule of `rate` per second, and the
    failures by kind (HTTP status or exception name)."""
    body = json.dumps(
        {"model": "m", "prompt": list(range(1000, 1000 + PROMPT_TOKENS)), "max_tokens": 1}
    ).encode()
    latencies: list[float] = []
    failures: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            started = time.perf_counter()
            try:
                async with session.post(
                    url + "/v1/completions", data=body, headers={"content-type": "application/json"}
                ) as response:
                    await response.read()
                    status = response.status
            except aiohttp.ClientError as err:
                failures[type(err).__name__] = failures.get(type(err).__name__, 0) + 1
                return
            if status != 200:
                failures[str(status)] = failures.get(str(status), 0) + 1
                return
            latencies.append(time.perf_counter() - started)

        for _ in range(50):  # warm-up: connections, first-call costs
            await one()
        latencies.clear()
        failures.clear()
        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * duration_s)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies, failures


def percentiles_ms(latencies: list[float]) -> dict[str, float]:
    values = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
        "count": int(values.size),
    }


async def proxy_latency(rate: float, duration_s: float, redis_url: str | None) -> dict:
    upstream_port, router_port = free_port(), free_port()
    upstream = subprocess.Popen([PYTHON, str(HERE / "zero_upstream.py"), str(upstream_port)])
    index = (
        f'{{redisConfig: {{address: "{redis_url}"}}}}'
        if redis_url
        else "{inMemoryConfig: {size: 100000000}}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "epp.yaml"
        config_path.write_text(CONFIG.format(index=index, zmq_port=free_port()))
        router = subprocess.Popen(
            [
                KVBENCH,
                "emulate",
                "router",
                "--config",
                str(config_path),
                "--endpoint",
                f"http://127.0.0.1:{upstream_port}",
                "--port",
                str(router_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(Path(tmp) / "router.log").open("wb"),
        )
        try:
            await wait_http(f"http://127.0.0.1:{upstream_port}/metrics")
            await wait_http(f"http://127.0.0.1:{router_port}/health")
            direct, direct_failures = await open_loop(
                f"http://127.0.0.1:{upstream_port}", rate, duration_s
            )
            routed, routed_failures = await open_loop(
                f"http://127.0.0.1:{router_port}", rate, duration_s
            )
        finally:
            stop_process(router)
            stop_process(upstream)
            log_text = (Path(tmp) / "router.log").read_text()
            errors = sorted(
                {
                    line
                    for line in log_text.splitlines()
                    if "Error" in line and not line.startswith("20")
                }
            )
            if errors:
                print("router log errors:", *errors, sep="\n", file=sys.stderr)
    direct_p, routed_p = percentiles_ms(direct), percentiles_ms(routed)
    direct_p["failures"], routed_p["failures"] = direct_failures, routed_failures
    return {
        "direct": direct_p,
        "via_router": routed_p,
        "added_p50_ms": routed_p["p50_ms"] - direct_p["p50_ms"],
        "added_p99_ms": routed_p["p99_ms"] - direct_p["p99_ms"],
    }


async def repeated(rate: float, args, redis_url: str | None) -> dict:
    """Several runs (this host is shared: single runs are noisy); medians of the added latency."""
    runs = [await proxy_latency(rate, args.duration_s, redis_url) for _ in range(args.repeats)]
    return {
        "median_added_p50_ms": statistics.median(r["added_p50_ms"] for r in runs),
        "median_added_p99_ms": statistics.median(r["added_p99_ms"] for r in runs),
        "median_routed_p99_ms": statistics.median(r["via_router"]["p99_ms"] for r in runs),
        "runs": runs,
    }


async def time_lookup(index, keys: list[int], repeats: int) -> dict[str, float]:
    await index.add("m", keys, [PodEntry("10.0.0.1:8000", "gpu"), PodEntry("10.0.0.2:8000", "cpu")])
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        found = await index.lookup("m", keys)
        durations.append(time.perf_counter() - started)
        assert len(found) == len(keys)
    return {
        "p50_ms": statistics.median(durations) * 1000,
        "p99_ms": float(np.percentile(durations, 99)) * 1000,
    }


async def index_lookup(redis_server: KVStoreServer) -> dict:
    tokens = [random.Random(1).randrange(150_000) for _ in range(10_000)]
    started = time.perf_counter()
    for _ in range(20):
        keys = block_keys(tokens, 16, "42")
    hashing_ms = (time.perf_counter() - started) / 20 * 1000
    redis_index = RedisIndex(redis_server.url, socket_timeout_s=1.0)
    try:
        result = {
            "prompt_tokens": len(tokens),
            "blocks": len(keys),
            "request_keys_ms": hashing_ms,
            "memory_lookup": await time_lookup(InMemoryIndex(), keys, 200),
            "redis_lookup": await time_lookup(redis_index, keys, 100),
        }
    finally:
        await redis_index.close()
    return result


def _redis_parser() -> str:
    try:
        import hiredis  # noqa: F401  (optional: redis-py parses replies with it when installed)
    except ImportError:
        return "python"
    return "hiredis"


async def ejection_time_s() -> dict:
    """Seconds from an engine's death (its process killed) to the pool marking it not ready,
    with the router's defaults (50 ms scrape interval, 200 ms timeout, 3 failures)."""
    port = free_port()
    upstream = subprocess.Popen([PYTHON, str(HERE / "zero_upstream.py"), str(port)])
    pool = EndpointPool([f"http://127.0.0.1:{port}"], time.monotonic)
    try:
        await wait_http(f"http://127.0.0.1:{port}/metrics")
        await pool.start()
        killed_s = time.monotonic()
        upstream.kill()
        while pool.endpoints[0].ready and time.monotonic() - killed_s < 5:
            await asyncio.sleep(0.005)
        return {"ejected_after_s": time.monotonic() - killed_s, "goal_s": 1.0}
    finally:
        await pool.stop()
        stop_process(upstream)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--rates", default="500,200", help="requests/s, comma-separated; the first is the goal's"
    )
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per configuration; the median is reported"
    )
    parser.add_argument("--out", default=str(HERE.parent / "results" / "router.json"))
    args = parser.parse_args()
    with KVStoreServer("redis") as redis_server:
        lookups = await index_lookup(redis_server)
        ejection = await ejection_time_s()
        rates = [float(rate) for rate in args.rates.split(",")]
        memory = {f"{rate:g}_rps": await repeated(rate, args, None) for rate in rates}
        redis = {f"{rate:g}_rps": await repeated(rate, args, redis_server.url) for rate in rates}
    result = {
        "benchmark": "router",
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "rates_rps": rates,
        "duration_s": args.duration_s,
        "repeats": args.repeats,
        "prompt_tokens_per_request": PROMPT_TOKENS,
        "scorers": "precise-prefix-cache 2, kv-cache-utilization 1, queue 1",
        "endpoint_ejection": ejection,
        "proxy_in_memory_index": memory,
        "proxy_redis_index": redis,
        "index_lookup_10k_tokens": lookups,
        "redis_py_parser": _redis_parser(),
        "goals": {"added_p99_ms_in_memory": 2.0, "added_p99_ms_redis": 5.0},
        "note": "client, router, upstream and Redis share this host's CPUs; added = percentile difference",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
