"""The vllm target: real `vllm serve` processes on this host, one stack per (model, scenario).

Engines get the scenario's flags and environment exactly as the emulated ones do (emulator/stack.py
builds both); the emulated llm-d router goes in front when routing can matter (more than one engine,
or a scenario that routes on KV events), and the scenario's Redis / Valkey runs as a real server.
Each server is stopped by pid: SIGINT (vLLM's clean shutdown, its engine-core children exit with
it), then SIGKILL of its process group after a timeout.

`vllm_command` is configurable: `[vllm, serve]` takes the model positionally; anything else (e.g.
`[.venv-vllm/bin/python, -m, vllm.entrypoints.openai.api_server]`) gets `--model PATH`.
VLLM_SERVER_DEV_MODE=1 is set so that POST /reset_prefix_cache exists (a dev-mode endpoint in vLLM).
A scenario the installed build cannot run fails with the reason first, then the log tail.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvbench.collect.prometheus import PrometheusParseError, parse_metrics
from kvbench.emulator.processes import StartError
from kvbench.emulator.stack import EngineSettings, RunningStack, clean_environment
from kvbench.results.layout import SystemUnderTest
from kvbench.spec.scenarios import RenderedScenario, ScenarioCatalog, load_catalog
from kvbench.targets.base import ComponentReset, Deployment, TargetError
from kvbench.targets.local_stack import LocalStackTarget, fetch_text, reset_engine_http

BASE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_SERVER_DEV_MODE": "1",
    "PYTHONUNBUFFERED": "1",
}
# (log text, the reason to report): how a build refuses a scenario it cannot run.
KNOWN_REFUSALS = (
    (
        "CPU Offloading is currently only supported on CUDA-alike",
        "the vLLM CPU build refuses OffloadingConnector (CPU offload needs a CUDA or XPU GPU): native-offload "
        "runs only on a GPU host or on the emulated target",
    ),
    (
        "No module named 'lmcache'",
        "LMCacheConnectorV1 needs the lmcache package in the vLLM environment",
    ),
    (
        "num_cpu_blocks",
        "this vLLM version sizes OffloadingConnector differently: set num_cpu_blocks "
        "(vLLM 0.11-0.13) or cpu_bytes_to_use (0.14+) through scenario_params",
    ),
    (
        "cpu_bytes_to_use",
        "this vLLM version sizes OffloadingConnector differently: set num_cpu_blocks "
        "(vLLM 0.11-0.13) or cpu_bytes_to_use (0.14+) through scenario_params",
    ),
)


# vllm-project/vllm#27170 (first released in 0.12.0): POST /reset_prefix_cache?reset_external=true
# also resets the connector's cache. OffloadingConnector implements that reset (its CPU tier is
# emptied); LMCacheConnectorV1 does not (the base connector's no-op), so its local CPU tier
# survives a reset and only an engine restart gives a cold cell.
RESET_EXTERNAL_SINCE = (0, 12)
CONNECTORS_WITH_RESET = ("OffloadingConnector",)


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    """(0, 26, 0) for "0.26.0", "0.26.0+cu130" or "0.26.0rc1"; None when it does not start with a
    number."""
    match = re.match(r"\d+(?:\.\d+)*", version or "")
    return tuple(int(part) for part in match.group(0).split(".")) if match else None


def cache_reset_method(rendered: RenderedScenario, version: str | None) -> str:
    """How a cell gets a cold cache on real vLLM: "gpu" (POST /reset_prefix_cache: the scenario has
    no tier beyond the GPU, or a remote one the store flush empties), "external" (the same with
    reset_external=true, which empties the connector's CPU tier), or "restart" (the engine is
    restarted: its CPU tier has no reset in this version)."""
    kv_config = rendered.kv_transfer_config or {}
    connector = kv_config.get("kv_connector")
    if connector is None:
        return "gpu"
    if connector == "LMCacheConnectorV1":
        local_cpu = rendered.engine_env.get("LMCACHE_LOCAL_CPU", "True").lower() in ("true", "1")
        if not local_cpu:
            return "gpu"
    parsed = version_tuple(version)
    if connector in CONNECTORS_WITH_RESET and parsed is not None and parsed >= RESET_EXTERNAL_SINCE:
        return "external"
    return "restart"


def prompt_tokens_served(url: str) -> float | None:
    """vllm:prompt_tokens_total of the engine at `url` (summed over its label sets): 0 for an engine
    that has served no prompt since its start; None when /metrics does not answer or lacks it."""
    status, body = fetch_text(f"{url}/metrics")
    if status != 200:
        return None
    try:
        samples = parse_metrics(body)
    except PrometheusParseError:
        return None
    values = [s.value for s in samples if s.name == "vllm:prompt_tokens_total"]
    return sum(values) if values else None


def python_of(command: list[str] | tuple[str, ...]) -> str | None:
    """The Python interpreter a vLLM command runs under: the command itself when it is a Python,
    else the interpreter on the `#!` line of the `vllm` script it names."""
    first = command[0]
    if Path(first).name.startswith("python"):
        return first
    path = shutil.which(first)
    if path is None:
        return None
    try:
        line = Path(path).read_bytes()[:200].split(b"\n", 1)[0].decode(errors="replace")
    except OSError:
        return None
    return line[2:].strip().split()[0] if line.startswith("#!") and len(line) > 2 else None


def missing_module(python: str, module: str, env: dict[str, str]) -> str | None:
    """None when `module` imports under `python` with `env`; else the import error's last line."""
    try:
        done = subprocess.run(
            [python, "-c", f"import {module}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{type(err).__name__}: {err}"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"


# LMCache 0.5's health monitor: when a tier cannot be reached it logs these and serves in "degraded
# mode", bypassing LMCache (the cell would measure plain vLLM under the scenario's name). Seen on
# the H200: valkey:// without the valkey-glide-sync module.
LMCACHE_DEGRADED = "entering degraded mode"
LMCACHE_REMOTE_FAILED = "Failed to initialize/re-establish remote connection: "


def lmcache_degraded_reason(log_text: str) -> str | None:
    """Why LMCache serves degraded, from an engine's log; None when it does not."""
    if LMCACHE_DEGRADED not in log_text:
        return None
    for line in log_text.splitlines():
        if LMCACHE_REMOTE_FAILED in line:
            cause = line.split(LMCACHE_REMOTE_FAILED, 1)[1].split(" (remote_backend.py", 1)[0]
            return (
                f"LMCache could not reach its remote tier and serves without it ({cause.strip()})"
            )
    return "LMCache's health monitor put it in degraded mode (it serves without its tiers)"


def refusal_reason(log_tail: str | None) -> str | None:
    for needle, reason in KNOWN_REFUSALS:
        if log_tail and needle in log_tail:
            return reason
    return None


@dataclass(frozen=True)
class VllmLauncher:
    vllm_command: tuple[str, ...]
    model_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGINT

    def command(self, settings: EngineSettings, flags: list[str]) -> list[str]:
        model = self.model_path or settings.model
        positional = self.vllm_command[-1:] == ("serve",)
        return [*self.vllm_command, *([model] if positional else ["--model", model]), *flags]

    def environment(self, scenario_env: dict[str, str]) -> dict[str, str]:
        return {**clean_environment(), **BASE_ENV, **self.env, **scenario_env}


class VllmTarget(LocalStackTarget):
    def __init__(self, target_spec, *, run_dir, seed: int = 0):
        super().__init__(target_spec, run_dir=run_dir, seed=seed)
        self.startup_timeout_s = target_spec.startup_timeout_s
        self._version: str | None = None

    def launcher(self) -> VllmLauncher:
        return VllmLauncher(
            tuple(self.spec.vllm_command), self.spec.model_path, dict(self.spec.env)
        )

    def up(
        self,
        model: str,
        scenario: str,
        scenario_params: dict[str, Any],
        *,
        catalog: ScenarioCatalog | None = None,
    ) -> Deployment:
        catalog = catalog if catalog is not None else load_catalog()
        entry = catalog.get(scenario)
        self.with_router = self.spec.engines > 1 or entry.kv_events_config is not None
        uses_lmcache = (entry.kv_transfer_config or {}).get("kv_connector") == "LMCacheConnectorV1"
        if uses_lmcache:
            self._check_lmcache(scenario)
        try:
            deployment = super().up(model, scenario, scenario_params, catalog=catalog)
        except TargetError as err:
            reason = refusal_reason(err.log_tail)
            if reason is None:
                raise
            raise TargetError(f"{scenario}: {reason}", err.log_tail) from None
        if uses_lmcache:
            self._refuse_degraded_lmcache(scenario, deployment)
        status, body = fetch_text(f"{deployment.api_urls[0]}/version")
        if status == 200:
            self._version = json.loads(body).get("version")
            deployment.facts.server_version = self._version
        return deployment

    def _refuse_degraded_lmcache(self, scenario: str, deployment: Deployment) -> None:
        """A cell of an LMCache scenario must run with LMCache's tiers: stop the stack and fail the
        cell with the reason when an engine's log says LMCache came up degraded."""
        stack = self._stacks[deployment.base_url]
        for process in stack.processes.processes:
            if not process.name.startswith("engine"):
                continue
            text = process.log_path.read_text(errors="replace") if process.log_path.exists() else ""
            reason = lmcache_degraded_reason(text)
            if reason is not None:
                self.down_stack(stack)
                raise TargetError(f"{scenario}: {reason} (log: {process.log_path})")

    def _check_lmcache(self, scenario: str) -> None:
        """LMCacheConnectorV1 imports lmcache inside the engine, after the model is loaded: check
        first, in the engines' own interpreter and environment, so the reason comes at once."""
        python = python_of(self.spec.vllm_command)
        if python is None:
            return  # cannot tell which interpreter; the engine's log will say
        env = self.launcher().environment({})
        error = missing_module(python, "lmcache.integration.vllm.vllm_v1_adapter", env)
        if error is not None:
            raise TargetError(
                f"{scenario}: LMCacheConnectorV1 needs the lmcache package in the vLLM "
                f"environment, built for its vLLM and torch ({python}: {error})"
            )

    def reset_engine(self, stack: RunningStack | None, index: int, url: str) -> ComponentReset:
        if stack is None:
            return reset_engine_http(url)
        method = cache_reset_method(stack.rendered, self._version)
        if method != "restart":
            result = reset_engine_http(url, reset_external=method == "external")
            return result.model_copy(update={"method": method})
        served = prompt_tokens_served(url)
        if served == 0:
            # Nothing has entered any tier since the engine started: it is cold as it stands, and
            # a restart (about 80 s on an H200) would only repeat the start.
            return ComponentReset(
                reset=True,
                what="none needed: the engine has served no prompt token since its start",
                method="fresh-start",
            )
        started = time.monotonic()
        try:
            stack.processes.restart(f"engine-{index}", self.startup_timeout_s)
        except StartError as err:
            return ComponentReset(reset=False, what="engine restart", method=method, error=str(err))
        return ComponentReset(
            reset=True,
            what="engine restart (no reset empties this connector's CPU tier in this version)",
            method=method,
            restart_s=round(time.monotonic() - started, 1),
        )

    def describe(self) -> SystemUnderTest:
        command = " ".join(self.spec.vllm_command)
        version = f" {self._version}" if self._version else ""
        return SystemUnderTest(
            kind="vllm",
            emulated=False,
            description=f"real vLLM{version} on this host (`{command}`), {self.spec.engines} engine(s)",
            details={
                "vllm_command": list(self.spec.vllm_command),
                "vllm_version": self._version,
                "model_path": self.spec.model_path,
                "engines": self.spec.engines,
                "extra_args": list(self.spec.extra_args),
            },
        )


def dry_run_engine_lines(
    target_spec: Any, catalog: Any, model: str, scenario: str, params: dict[str, Any], seed: int
) -> list[str]:
    """What `up` would start, per engine: the full command line and the environment the engine
    gets beyond the inherited one (kvbench's fixed variables, the target's `env`, the scenario's).
    Ports and addresses that exist only once servers start are `<...>` placeholders."""
    import shlex

    from kvbench.emulator.stack import settings_from_spec
    from kvbench.spec.scenarios import Runtime, engine_overrides, render_scenario

    overrides = engine_overrides(catalog, scenario, params, model)
    settings = settings_from_spec(target_spec, model, overrides, seed)
    launcher = VllmLauncher(
        tuple(target_spec.vllm_command), target_spec.model_path, dict(target_spec.env)
    )
    lines: list[str] = []
    for index in range(settings.engines):
        runtime = Runtime(
            model,
            settings.served_model_name,
            block_size=settings.routing_block_size,
            kv_store_url="<kv-store-url>",
            kv_store_address="<kv-store-url>",
            pod_address=f"<engine-{index}-address>",
            kv_events_endpoint="<router-events-endpoint>",
            kv_events_bind="<router-events-endpoint>",
            kv_events_replay_endpoint=f"<engine-{index}-replay-endpoint>",
        )
        rendered = render_scenario(catalog, scenario, params, runtime)
        flags = settings.flags(0) + rendered.engine_args + list(settings.extra_args)
        flags[flags.index("--port") + 1] = f"<engine-{index}-port>"
        env = {**BASE_ENV, **launcher.env, **rendered.engine_env}
        lines.append(f"engine-{index}: {shlex.join(launcher.command(settings, flags))}")
        lines += [f"engine-{index} env: {name}={value}" for name, value in sorted(env.items())]
    return lines
