"""vllm target on a GPU build: how a cell gets cold (reset_external / restart), the block size the
engine reports, LMCache's preflight, engine restarts by pid, and the dry run's engine lines."""

import sys
import urllib.request

import pytest

from kvbench.emulator.processes import ProcessSet
from kvbench.emulator.stores import free_port
from kvbench.spec.experiment import VllmTarget as VllmSpec
from kvbench.spec.scenarios import Runtime, load_catalog, render_scenario
from kvbench.targets.base import TargetError
from kvbench.targets.local_stack import _reset_succeeded, cpu_capacity_tokens, gpu_block_size
from kvbench.targets.vllm import (
    VllmTarget,
    cache_reset_method,
    dry_run_engine_lines,
    lmcache_degraded_reason,
    missing_module,
    python_of,
    version_tuple,
)

CATALOG = load_catalog()
METRICS = 'vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="8192"} 1.0\n'


def rendered(scenario: str, **params):
    runtime = Runtime("Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B")
    return render_scenario(CATALOG, scenario, params, runtime)


def test_version_tuple_reads_release_local_and_rc_versions():
    assert version_tuple("0.26.0") == (0, 26, 0)
    assert version_tuple("0.26.0+cu130") == (0, 26, 0)
    assert version_tuple("0.11.2rc1") == (0, 11, 2)
    assert version_tuple(None) is None
    assert version_tuple("dev") is None


@pytest.mark.parametrize(
    ("scenario", "params", "version", "method"),
    [
        ("no-offload", {}, "0.26.0", "gpu"),
        (
            "native-offload",
            {"num_cpu_blocks": None, "cpu_bytes_to_use": 10**9},
            "0.26.0",
            "external",
        ),
        ("native-offload", {}, "0.11.0", "restart"),  # before reset_external existed
        ("native-offload", {}, None, "restart"),  # unknown version: do not trust a reset
        ("lmcache-local", {}, "0.26.0", "restart"),  # LMCacheConnectorV1 has no cache reset
        ("lmcache-redis", {"lmcache_local_cpu": False}, "0.26.0", "gpu"),  # store flushed
        ("lmcache-redis", {}, "0.26.0", "restart"),  # its local CPU tier is on by default
    ],
)
def test_cache_reset_method_per_connector_and_version(scenario, params, version, method):
    assert cache_reset_method(rendered(scenario, **params), version) == method


def test_a_reset_answered_success_false_is_not_a_reset():
    assert _reset_succeeded(200, '{"success": false}') is False
    assert _reset_succeeded(200, '{"success": true}') is True
    assert _reset_succeeded(200, "") is True  # older vLLM: 200 with no body
    assert _reset_succeeded(500, "") is False


def test_offload_capacity_with_the_block_size_left_to_the_platform():
    # the vllm target passes no --block-size: the engine's own report is the block size
    block_size = gpu_block_size(METRICS)
    assert block_size == 16
    scenario = rendered("native-offload", num_cpu_blocks=None, cpu_bytes_to_use=32_000_000_000)
    tokens = cpu_capacity_tokens(scenario, "Qwen/Qwen3-0.6B", block_size, 1)
    per_token = 2 * 28 * 8 * 128 * 2  # Qwen3-0.6B K+V bytes per token
    assert tokens == 32_000_000_000 // (per_token * 16) * 16


def test_python_of_a_python_command_and_of_a_script_shebang(tmp_path, monkeypatch):
    assert python_of([sys.executable, "-m", "vllm.entrypoints.cli.main"]) == sys.executable
    script = tmp_path / "vllm"
    script.write_text(f"#!{sys.executable}\nprint('hi')\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert python_of(["vllm", "serve"]) == sys.executable
    assert python_of(["no-such-command-kvbench"]) is None


def test_missing_module_names_the_import_error():
    assert missing_module(sys.executable, "json", {}) is None
    error = missing_module(sys.executable, "kvbench_no_such_module_xyz", {})
    assert error is not None and "ModuleNotFoundError" in error


def test_lmcache_scenario_fails_at_once_with_the_reason_when_lmcache_does_not_import(tmp_path):
    spec = VllmSpec(kind="vllm", vllm_command=[sys.executable, "-m", "vllm.entrypoints.cli.main"])
    target = VllmTarget(spec, run_dir=tmp_path)
    with pytest.raises(TargetError) as raised:
        target.up("Qwen/Qwen3-0.6B", "lmcache-local", {}, catalog=CATALOG)
    assert "lmcache package" in str(raised.value)
    assert "ModuleNotFoundError" in str(raised.value)
    assert not (tmp_path / "logs").exists()  # nothing was started


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# Lines of a real engine log (LMCache 0.5.6 on vLLM 0.26.0, H200, valkey:// without glide_sync).
DEGRADED_LOG = (
    "(EngineCore pid=1249) [2026-12-03 12:37:43,016] LMCache WARNING: Failed to initialize/"
    "re-establish remote connection: Valkey support requires the glide_sync module. Install: pip "
    "install 'valkey-glide-sync>=2.3.0' (note: the plain 'valkey-glide' package is async-only) "
    "(remote_backend.py:160:lmcache.v1.storage_backend.remote_backend)\n"
    "(EngineCore pid=1249) [2026-12-03 12:37:43,027] LMCache WARNING: HealthMonitor: System "
    "unhealthy, entering degraded mode (base.py:281:lmcache.v1.health_monitor.base)\n"
)


def test_lmcache_in_degraded_mode_is_a_failed_cell_reason_naming_the_cause():
    reason = lmcache_degraded_reason(DEGRADED_LOG)
    assert reason is not None and "glide_sync" in reason and "remote tier" in reason
    assert "remote_backend.py" not in reason
    healthy = DEGRADED_LOG.replace("entering degraded mode", "all checks passed")
    assert lmcache_degraded_reason(healthy) is None  # a retried connection that came back
    only_monitor = DEGRADED_LOG.splitlines()[1]
    assert "degraded mode" in (lmcache_degraded_reason(only_monitor) or "")


def test_restart_replaces_the_process_on_the_same_port(tmp_path):
    port = free_port()
    processes = ProcessSet()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    url = f"http://127.0.0.1:{port}/"
    first = processes.spawn("engine-0", argv, {"PATH": "/usr/bin:/bin"}, tmp_path / "e.log", url)
    try:
        from kvbench.emulator.processes import wait_healthy

        wait_healthy([first], 20)
        second = processes.restart("engine-0", timeout_s=20)
        assert second.pid != first.pid
        assert not first.alive()
        assert processes.pids() == {"engine-0": second.pid}
        assert _http_ok(url)
    finally:
        processes.stop_all()
    assert not _http_ok(url)


def test_dry_run_lines_hold_each_engines_full_command_and_environment():
    spec = VllmSpec(
        kind="vllm",
        model_path="/models/q06",
        engines=2,
        env={"CUDA_VISIBLE_DEVICES": "0"},
        extra_args=["--load-format", "dummy"],
    )
    params = {"num_cpu_blocks": None, "cpu_bytes_to_use": 10**9, "num_gpu_blocks_override": 4096}
    lines = dry_run_engine_lines(spec, CATALOG, "Qwen/Qwen3-0.6B", "native-offload", params, 3)
    commands = [line for line in lines if ": vllm serve" in line]
    assert [line.split(":")[0] for line in commands] == ["engine-0", "engine-1"]
    command = commands[1]
    for part in (
        "vllm serve /models/q06",
        "--port '<engine-1-port>'",
        "--num-gpu-blocks-override 4096",
        "--load-format dummy",
        "--seed 3",
        '"cpu_bytes_to_use":1000000000',
    ):
        assert part in command
    assert "engine-1 env: CUDA_VISIBLE_DEVICES=0" in lines
    assert "engine-0 env: VLLM_SERVER_DEV_MODE=1" in lines


def test_probe_keeps_sums_counts_and_totals_of_its_families_summed_over_labels():
    from kvbench.calibrate.probe import counter_deltas, kept_counters
    from kvbench.collect.prometheus import parse_metrics

    text = (
        "# TYPE vllm:iteration_tokens_total histogram\n"
        'vllm:iteration_tokens_total_bucket{le="1"} 3\n'
        'vllm:iteration_tokens_total_count{engine="0"} 10\n'
        'vllm:iteration_tokens_total_sum{engine="0"} 500\n'
        "# TYPE vllm:prompt_tokens counter\n"
        'vllm:prompt_tokens_total{engine="0"} 7\n'
        'vllm:prompt_tokens_total{engine="1"} 5\n'
        "# TYPE vllm:unrelated counter\n"
        "vllm:unrelated_total 9\n"
    )
    kept = kept_counters(parse_metrics(text))
    assert kept == {
        "vllm:iteration_tokens_total_count": 10.0,
        "vllm:iteration_tokens_total_sum": 500.0,
        "vllm:prompt_tokens_total": 12.0,
    }
    later = dict(kept, **{"vllm:iteration_tokens_total_count": 25.0})
    assert counter_deltas(kept, later)["vllm:iteration_tokens_total_count"] == 15.0


class _MetricsServer:
    """A loopback /metrics that reports `prompt_tokens` served, for the fresh-engine check."""

    def __init__(self, prompt_tokens: float) -> None:
        import http.server
        import threading

        body = (
            "# TYPE vllm:prompt_tokens counter\n"
            f'vllm:prompt_tokens_total{{engine="0",model_name="m"}} {prompt_tokens}\n'
        ).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _RestartRecorder:
    def __init__(self) -> None:
        self.restarted: list[str] = []

    def restart(self, name: str, timeout_s: float) -> None:
        self.restarted.append(name)


@pytest.mark.parametrize(("served", "restarted"), [(0.0, []), (4224.0, ["engine-0"])])
def test_a_restart_cell_skips_the_restart_only_for_an_engine_that_served_nothing(
    tmp_path, served, restarted
):
    from types import SimpleNamespace

    server = _MetricsServer(served)
    try:
        target = VllmTarget(VllmSpec(kind="vllm"), run_dir=tmp_path)
        target._version = "0.26.0"
        processes = _RestartRecorder()
        stack = SimpleNamespace(rendered=rendered("lmcache-local"), processes=processes)
        result = target.reset_engine(stack, 0, server.url)
    finally:
        server.close()
    assert result.reset is True
    assert processes.restarted == restarted
    assert result.method == ("fresh-start" if served == 0 else "restart")
