#!/usr/bin/env python
"""Load generator performance: kvbench vs GuideLLM 0.8.1 on one zero-delay mock, client-added TTFT,
and the most open streams kvbench holds without client errors.

Runs (each against `python -m kvbench.loadgen.mock_server` in its own process, 127.0.0.1):
1. kvbench, concurrent 64, 128 one-token chunks per request, zero delay: output tok/s; TTFT split
   on the shared monotonic clock (the mock logs handler entry and first write per x-request-id):
   client TTFT - mock's own TTFB = request leg (client write + kernel + the MOCK's loop pickup) +
   response leg (kernel + the CLIENT's loop + parse). The response leg is the client-added part:
   the client writes a request without yielding to its loop, so its share of the request leg is
   microseconds; a saturated mock's queueing lands in the request leg.
2. GuideLLM 0.8.1 (its own venv, .venv-guidellm) with the same shape: output tok/s.
3. kvbench, concurrent N for N in --streams, mock ITL 20 ms: errors and peak open streams.
Also kvbench c=64 against the mock with 10 ms ITL (client not saturated): client-added TTFT.
Goals (printed, not asserted): kvbench >= 3x GuideLLM tok/s; client-added TTFT p50 < 5 ms at c=64;
2,000 open streams with zero errors. Results: benchmarks/results/loadgen.json.
Usage: .venv/bin/python benchmarks/loadgen/bench_loadgen.py [--duration-s 10] [--skip-guidellm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from kvbench.loadgen.api import EndpointConfig, LevelPlan, RunClock, run_level
from kvbench.loadgen.transport import raise_fd_limit
from kvbench.workload.types import Conversation, Turn

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "loadgen.json"
GUIDELLM = ROOT / ".venv-guidellm" / "bin" / "guidellm"
TOKENIZER_DIR = ROOT / ".cache" / "tiny-qwen3"
PROMPT_TOKENS = 128
OUTPUT_TOKENS = 128


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MockProcess:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvbench.loadgen.mock_server", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("mock server did not start")

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/mock/stats", timeout=30) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def conversations(count: int, output_tokens: int) -> list[Conversation]:
    return [
        Conversation(
            conversation_id=f"b{i}",
            prefix_token_ids=(),
            prefix_group=None,
            turns=[
                Turn(
                    question_token_ids=tuple((i * 7 + k) % 4000 + 10 for k in range(PROMPT_TOKENS)),
                    output_tokens=output_tokens,
                )
            ],
        )
        for i in range(count)
    ]


async def kvbench_level(
    url: str,
    concurrency: int,
    duration_s: float,
    output_tokens: int,
    warmup_s: float,
    clock: RunClock | None = None,
):
    records = []
    clock = clock or RunClock()
    endpoint = EndpointConfig(base_url=url, model_name="mock-model", request_timeout_s=120)
    plan = LevelPlan(
        strategy="concurrent",
        level=concurrency,
        duration_s=duration_s,
        max_requests=None,
        warmup_s=warmup_s,
    )
    result = await run_level(
        endpoint,
        conversations(max(concurrency, 256), output_tokens),
        plan,
        cell_id="bench",
        clock=clock,
        on_record=records.append,
    )
    return result, records


def throughput_of(records, start_s: float, end_s: float) -> float:
    measured = [r for r in records if r.phase == "measure" and r.status == "ok"]
    window_end = max([end_s] + [r.end_s for r in measured])
    return sum(r.output_tokens for r in measured) / (window_end - start_s)


def run_kvbench_c64(duration_s: float, *mock_args: str, output_tokens: int = OUTPUT_TOKENS) -> dict:
    mock = MockProcess("--record-timings", *mock_args)
    clock = RunClock()
    try:
        result, records = asyncio.run(
            kvbench_level(mock.url, 64, duration_s, output_tokens, 1.0, clock)
        )
        stats = mock.stats()
    finally:
        mock.stop()
    ttfb_ms, timings = stats["ttfb_ms"], stats["timings_perf"]
    ok = [
        r for r in records if r.status == "ok" and r.phase == "measure" and r.request_id in timings
    ]
    added = np.array([r.ttft_ms - ttfb_ms[r.request_id] for r in ok])
    # Shared-clock legs (perf_counter is CLOCK_MONOTONIC, the same in both processes on Linux):
    # request leg = client sent -> mock handler entered (client write + kernel + the MOCK's loop pickup);
    # response leg = mock wrote first byte -> client read first token (kernel + the CLIENT's loop + parse).
    request_leg = np.array(
        [(timings[r.request_id][0] - clock.t0_perf - r.sent_s) * 1000 for r in ok]
    )
    response_leg = np.array(
        [(r.first_token_s + clock.t0_perf - timings[r.request_id][1]) * 1000 for r in ok]
    )
    return {
        "output_tokens_per_s": throughput_of(records, result.measure_start_s, result.measure_end_s),
        "requests_ok": len(ok),
        "errors": sum(r.status != "ok" for r in records),
        "client_ttft_p50_ms": float(np.percentile([r.ttft_ms for r in ok], 50)),
        "client_added_ttft_ms": _pcts(added),
        "request_leg_ms": _pcts(request_leg),
        "response_leg_ms": _pcts(response_leg),
        "client_stats": result.client_stats,
    }


def _pcts(values: np.ndarray) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)}


def run_guidellm_c64(duration_s: float) -> dict:
    if not GUIDELLM.exists():
        return {"skipped": "no .venv-guidellm (pip install torch==2.13.0 guidellm==0.8.1 into it)"}
    if not (TOKENIZER_DIR / "tokenizer.json").exists():
        subprocess.run(
            [
                str(ROOT / ".venv-vllm" / "bin" / "python"),
                str(ROOT / "scripts" / "make-tiny-model.py"),
                str(TOKENIZER_DIR),
            ],
            check=True,
            capture_output=True,
        )
    mock = MockProcess()
    out = Path(tempfile.mkdtemp(prefix="guidellm-")) / "result.json"
    cmd = [
        str(GUIDELLM),
        "run",
        "--backend",
        f"kind=openai_http,target={mock.url},request_format=/v1/completions",
        "--profile",
        "kind=concurrent,streams=64",
        "--constraint",
        f"kind=max_duration,seconds={duration_s:g}",
        "--data",
        f"kind=synthetic_text,prompt_tokens={PROMPT_TOKENS},output_tokens={OUTPUT_TOKENS}",
        "--tokenizer",
        f"kind=hf_auto,model={TOKENIZER_DIR}",
        "--output",
        f"kind=json,path={out}",
        "--disable-console-interactive",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=duration_s + 240
        )
    finally:
        mock.stop()
    if proc.returncode != 0 or not out.exists():
        return {"error": f"guidellm exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"}
    bench = json.loads(out.read_text())["benchmarks"][0]
    metrics = bench["metrics"]
    tokens = metrics["output_token_count"]["successful"]["total_sum"]
    return {
        "output_tokens_per_s": tokens / bench["duration"],
        "duration_s": bench["duration"],
        "requests_ok": metrics["output_token_count"]["successful"]["count"],
        "reported_output_tokens_per_second_mean": metrics["output_tokens_per_second"]["successful"][
            "mean"
        ],
        "ttft_p50_ms": metrics["time_to_first_token_ms"]["successful"]["median"],
    }


def run_open_streams(levels: list[int], duration_s: float) -> list[dict]:
    raise_fd_limit(max(levels) * 2 + 1024)
    rows = []
    for streams in levels:
        mock = MockProcess("--itl-ms", "20")
        try:
            # 200 tokens at 20 ms: each stream stays open ~4 s, longer when the mock itself lags
            result, records = asyncio.run(
                kvbench_level(mock.url, streams, duration_s, 200, warmup_s=0.0)
            )
        finally:
            mock.stop()
        errors = [r.error for r in records if r.status != "ok"]
        rows.append(
            {
                "streams": streams,
                "requests": len(records),
                "errors": len(errors),
                "first_error": errors[0] if errors else None,
                "peak_open_streams": result.peak_in_flight,
                "event_loop_lag_ms_p99": result.client_stats["event_loop_lag_ms_p99"],
                "client_cpu_percent_mean": result.client_stats["client_cpu_percent_mean"],
                "itl_p50_ms": float(np.percentile([g for r in records for g in r.itl_ms], 50)),
            }
        )
        print(
            f"open streams {streams}: peak {result.peak_in_flight}, requests {len(records)}, errors {len(errors)}",
            flush=True,
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--streams", default="500,1000,2000")
    parser.add_argument("--streams-duration-s", type=float, default=8.0)
    parser.add_argument("--skip-guidellm", action="store_true")
    args = parser.parse_args()
    out: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": "2-core shared machine, other engineers' work running: noisy",
        },
        "shape": {
            "prompt_tokens": PROMPT_TOKENS,
            "output_tokens": OUTPUT_TOKENS,
            "tokens_per_chunk": 1,
            "concurrency": 64,
            "duration_s": args.duration_s,
        },
    }
    out["kvbench_c64"] = run_kvbench_c64(args.duration_s)
    print("kvbench c64:", json.dumps(out["kvbench_c64"], indent=1), flush=True)
    # The zero-delay run saturates the client on purpose, so its TTFT is mostly queueing behind other
    # streams' chunks. The client's own overhead shows when the server paces tokens (10 ms ITL).
    out["kvbench_c64_itl_10ms"] = run_kvbench_c64(
        args.duration_s, "--itl-ms", "10", output_tokens=64
    )
    print(
        "kvbench c64, mock ITL 10 ms:",
        json.dumps(out["kvbench_c64_itl_10ms"], indent=1),
        flush=True,
    )
    if not args.skip_guidellm:
        out["guidellm_c64"] = run_guidellm_c64(args.duration_s)
        print("guidellm c64:", json.dumps(out["guidellm_c64"], indent=1), flush=True)
        g = out["guidellm_c64"].get("output_tokens_per_s")
        if g:
            out["throughput_ratio_kvbench_over_guidellm"] = (
                out["kvbench_c64"]["output_tokens_per_s"] / g
            )
    out["open_streams_itl_20ms"] = run_open_streams(
        [int(s) for s in args.streams.split(",")], args.streams_duration_s
    )
    ok_levels = [
        row["peak_open_streams"] for row in out["open_streams_itl_20ms"] if row["errors"] == 0
    ]
    out["max_open_streams_zero_errors"] = max(ok_levels) if ok_levels else 0
    out["goals"] = {
        "ratio>=3": out.get("throughput_ratio_kvbench_over_guidellm", 0) >= 3,
        # the client's part of TTFT = the response leg (mock's first byte -> client token)
        "client_added_ttft_p50<5ms (zero-delay c64, response leg)": out["kvbench_c64"][
            "response_leg_ms"
        ]["p50"]
        < 5,
        "client_added_ttft_p50<5ms (10 ms ITL c64, response leg)": out["kvbench_c64_itl_10ms"][
            "response_leg_ms"
        ]["p50"]
        < 5,
        "open_streams>=2000": out["max_open_streams_zero_errors"] >= 2000,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: out[k]
                for k in (
                    "throughput_ratio_kvbench_over_guidellm",
                    "max_open_streams_zero_errors",
                    "goals",
                )
                if k in out
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
