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
import signal
from dataclasses import dataclass, field
from typing import Any

from kvbench.emulator.stack import EngineSettings, clean_environment
from kvbench.results.layout import SystemUnderTest
from kvbench.spec.scenarios import ScenarioCatalog, load_catalog
from kvbench.targets.base import Deployment, TargetError
from kvbench.targets.local_stack import LocalStackTarget, fetch_text

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
        self.with_router = (
            self.spec.engines > 1 or catalog.get(scenario).kv_events_config is not None
        )
        try:
            deployment = super().up(model, scenario, scenario_params, catalog=catalog)
        except TargetError as err:
            reason = refusal_reason(err.log_tail)
            if reason is None:
                raise
            raise TargetError(f"{scenario}: {reason}", err.log_tail) from None
        status, body = fetch_text(f"{deployment.api_urls[0]}/version")
        if status == 200:
            self._version = json.loads(body).get("version")
            deployment.facts.server_version = self._version
        return deployment

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
