"""The router under many open streams: does it tell loaded engines from dead ones?

Starts the emulated stack (2 engines behind the router, no-offload, as `kvbench run` does: separate
processes on 127.0.0.1), opens N concurrent streaming completions through the router (default
1,000; long outputs so they stay open), and counts: answers by HTTP status (a 503 "no ready
endpoint" would mean a loaded engine was taken for dead), and from the router's /metrics the
ejections, slow scrapes and re-admissions during the load. The fault pass that motivated it saw
both engines ejected for ~5 s and 503s under 1,000 streams on 2 cores.

Prints and saves JSON to benchmarks/results/reliability_router_under_load.json. Not a test.
Usage: .venv/bin/python benchmarks/reliability/router_under_load.py [STREAMS]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from kvbench.collect.prometheus import parse_metrics
from kvbench.emulator.stack import EmulatedLauncher, settings_from_spec, start_stack
from kvbench.spec.experiment import EmulatedTarget
from kvbench.spec.scenarios import load_catalog

MODEL = "Qwen/Qwen3-0.6B"


def _router_counters(text: str) -> dict[str, float]:
    wanted = (
        "kvbench_router_endpoint_ejections_total",
        "kvbench_router_endpoint_slow_scrapes_total",
        "kvbench_router_endpoint_readmissions_total",
    )
    totals = dict.fromkeys(wanted, 0.0)
    for sample in parse_metrics(text):
        if sample.name in totals:
            totals[sample.name] += sample.value
            if "reason" in sample.labels:
                key = f"{sample.name}{{reason={sample.labels['reason']}}}"
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


async def _one(session: aiohttp.ClientSession, url: str, index: int) -> int:
    body = {
        "model": MODEL,
        "prompt": f"stream {index}: " + "tell me a long story " * 20,
        "max_tokens": 256,
        "ignore_eos": True,
        "stream": True,
    }
    try:
        async with session.post(url + "/v1/completions", json=body) as response:
            async for _ in response.content.iter_any():
                pass
            return response.status
    except aiohttp.ClientError:
        return 0


async def _load(base_url: str, streams: int) -> dict:
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        async with session.get(base_url + "/metrics") as response:
            before = _router_counters(await response.text())
        started = time.perf_counter()
        statuses = await asyncio.gather(*(_one(session, base_url, i) for i in range(streams)))
        elapsed_s = time.perf_counter() - started
        async with session.get(base_url + "/metrics") as response:
            after = _router_counters(await response.text())
    return {
        "streams": streams,
        "seconds": round(elapsed_s, 2),
        "statuses": {str(k): v for k, v in sorted(Counter(statuses).items())},
        "router_during_load": {k: after[k] - before[k] for k in after},
    }


def main(streams: int) -> dict:
    target = EmulatedTarget(
        kind="emulated", engines=2, max_num_seqs=512, num_gpu_blocks_override=20000
    )
    settings = settings_from_spec(target, MODEL, {}, seed=0)
    with tempfile.TemporaryDirectory(prefix="kvbench-bench-router-") as logs:
        stack = start_stack(
            load_catalog(), "no-offload", {}, settings, Path(logs), EmulatedLauncher("H100-SXM")
        )
        try:
            result = asyncio.run(_load(stack.base_url, streams))
        finally:
            stack.stop()
            warnings = [
                line.strip()
                for log in Path(logs).glob("*.log")
                for line in log.read_text(errors="replace").splitlines()
                if "WARNING" in line or "ERROR" in line
            ]
    result["router_and_engine_warnings"] = warnings[:20]
    return result


if __name__ == "__main__":
    summary = main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    out = Path(__file__).resolve().parents[1] / "results" / "reliability_router_under_load.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
