"""Start and stop the two peers of the parity run: real vLLM (CPU build) and the emulated engine.

Both get the same KV-cache shape (block size, block count, max model length), hash algorithm,
PYTHONHASHSEED, `--enable-prompt-tokens-details` and a `--kv-events-config` whose endpoint is a
non-wildcard `tcp://127.0.0.1:PORT`, so their PUB sockets *connect* to our SUB, which binds first.
Servers bind 127.0.0.1 on a free port, log to a file under the work dir, and are stopped by pid
(SIGINT, then SIGKILL of their own process group after a grace period).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
KVBENCH_PYTHON = REPO / ".venv" / "bin" / "python"
SERVED_MODEL = "tiny-qwen3"


@dataclass(frozen=True)
class CacheShape:
    """What both peers must agree on for the comparison to mean anything."""

    block_size: int = 32  # the CPU attention backend needs a multiple of 32
    num_gpu_blocks: int = 24  # block 0 is the null block: 23 usable
    max_model_len: int = 512  # vLLM refuses more than the blocks can hold
    hash_algo: str = "sha256_cbor"
    python_hash_seed: str = "0"

    def flags(self) -> list[str]:
        return [
            "--block-size",
            str(self.block_size),
            "--num-gpu-blocks-override",
            str(self.num_gpu_blocks),
            "--max-model-len",
            str(self.max_model_len),
            "--prefix-caching-hash-algo",
            self.hash_algo,
            "--enable-prompt-tokens-details",
            "--served-model-name",
            SERVED_MODEL,
        ]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path
    meta: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, num_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-num_chars:]
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kv_events_config(events_port: int) -> str:
    return json.dumps(
        {
            "enable_kv_cache_events": True,
            "publisher": "zmq",
            "endpoint": f"tcp://127.0.0.1:{events_port}",
            "topic": "kv-events",
        }
    )


def real_vllm_env(work_dir: Path, shape: CacheShape) -> dict[str, str]:
    """reference/real-vllm-on-cpu.md: offline, no usage stats, every cache and temp dir under work_dir."""
    tmp, cache = work_dir / "tmp", work_dir / "cache"
    tmp.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "TMPDIR": str(tmp),
            "VLLM_CACHE_ROOT": str(cache),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
            "XDG_CACHE_HOME": str(cache),
            "PYTHONHASHSEED": shape.python_hash_seed,
        }
    )
    return env


def start_real_vllm(model_dir: Path, work_dir: Path, shape: CacheShape, events_port: int) -> Server:
    port = free_port()
    cmd = [
        str(VLLM_PYTHON),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--load-format",
        "dummy",
        "--enforce-eager",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--seed",
        "0",
        "--kv-events-config",
        kv_events_config(events_port),
        *shape.flags(),
    ]
    return _spawn("real-vllm", cmd, real_vllm_env(work_dir, shape), port, work_dir)


EMULATOR_COMPAT = "0.32"  # the real peer's version: `kvbench emulate serve --vllm-compat 0.32`


def start_emulator(
    work_dir: Path, shape: CacheShape, events_port: int, vllm_compat: str = EMULATOR_COMPAT
) -> Server:
    """`kvbench emulate serve` with the behaviour profile `vllm_compat` (0.32: the real peer's)."""
    port = free_port()
    env = dict(os.environ)
    env.update({"PYTHONHASHSEED": shape.python_hash_seed, "KVBENCH_KV_EVENTS_FORMAT": "v0.32"})
    cmd = [
        str(KVBENCH_PYTHON),
        "-m",
        "kvbench.cli",
        "emulate",
        "serve",
        "kvbench/tiny-qwen3",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--kv-events-config",
        kv_events_config(events_port),
        "--vllm-compat",
        vllm_compat,
        *shape.flags(),
    ]
    return _spawn("emulator", cmd, env, port, work_dir)


def _spawn(name: str, cmd: list[str], env: dict[str, str], port: int, work_dir: Path) -> Server:
    log_path = work_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
    return Server(name, proc, port, log_path, meta={"cmd": cmd})


def wait_healthy(server: Server, timeout_s: float) -> float:
    """Poll GET /health until 200; returns seconds waited. Raises RuntimeError if it dies or times out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{server.name} not healthy after {timeout_s:.0f} s:\n{server.log_tail()}")


def stop(server: Server, grace_s: float = 20.0) -> None:
    """SIGINT the server's pid; if it (or a child in its session) outlives the grace, SIGKILL its group."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:  # the group id is the pid we started (start_new_session): only our own processes
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
