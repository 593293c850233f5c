"""A scenario's local serving stack: the KV store it needs, N engines, the router in front.

Contract:
- everything binds 127.0.0.1 on free ports; logs go to `log_dir` (one file per process, plus the
  router's decision log);
- order: store, router (its KV-event SUB socket binds), engines (their PUB sockets connect to it);
  `start_stack` returns only when every engine's and the router's /health answer 200, else it stops
  what it started and raises StartError with the failing process's log tail;
- engines are `kvbench emulate serve` processes by default; `EngineLauncher` lets the vllm target
  start real `vllm serve` instead with the same flags;
- `RunningStack.stop()` stops router, engines, then the store, by pid; it is idempotent.
The environment the engines inherit is cleaned of LMCACHE_* and PYTHONHASHSEED, so only the
scenario's own settings reach them.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kvbench.emulator.processes import ProcessSet, StartError, wait_healthy
from kvbench.emulator.stores import KVStoreServer, StoreUnavailable, free_port
from kvbench.emulator.tiers.lmcache_config import DEFAULT_REMOTE_PAYLOAD_SCALE
from kvbench.spec.scenarios import (
    RenderedScenario,
    Runtime,
    ScenarioCatalog,
    render_scenario,
    store_maxmemory_bytes,
)

HOST = "127.0.0.1"
# LMCache remote payloads the emulator writes are this fraction of the true bytes (the connector's
# `kvbench.remote_payload_scale` default); a store's maxmemory is scaled alike, plus room for keys/metadata.
REMOTE_PAYLOAD_SCALE = DEFAULT_REMOTE_PAYLOAD_SCALE
STORE_BASE_BYTES = 8 * 1024 * 1024
_SCENARIO_ENV_PREFIXES = ("LMCACHE_",)
_SCENARIO_ENV_NAMES = ("PYTHONHASHSEED",)


@dataclass(frozen=True)
class EngineSettings:
    """What every engine of the stack gets (from the target spec, with a cell's engine overrides)."""

    model: str
    served_model_name: str
    engines: int = 1
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = 0.9  # None: the server's default (flag not passed)
    num_gpu_blocks_override: int | None = None
    max_num_seqs: int | None = 256
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    block_size: int | None = 16  # None: the platform's default (real vLLM on CPU: 128)
    seed: int = 0
    extra_args: tuple[str, ...] = ()

    @property
    def routing_block_size(self) -> int:
        """The block size the router's token processor must use (equal to the engines')."""
        return self.block_size or 16

    def flags(self, port: int) -> list[str]:
        flags = [
            "--host",
            HOST,
            "--port",
            str(port),
            "--served-model-name",
            self.served_model_name,
            "--tensor-parallel-size",
            str(self.tensor_parallel_size),
            "--seed",
            str(self.seed),
            "--enable-prompt-tokens-details",
        ]
        for flag, value in (
            ("--max-num-seqs", self.max_num_seqs),
            ("--gpu-memory-utilization", self.gpu_memory_utilization),
            ("--block-size", self.block_size),
            ("--num-gpu-blocks-override", self.num_gpu_blocks_override),
            ("--max-num-batched-tokens", self.max_num_batched_tokens),
            ("--max-model-len", self.max_model_len),
        ):
            if value is not None:
                flags += [flag, str(value)]
        return flags


class EngineLauncher(Protocol):
    def command(self, settings: EngineSettings, flags: list[str]) -> list[str]: ...

    def environment(self, scenario_env: dict[str, str]) -> dict[str, str]: ...


@dataclass(frozen=True)
class EmulatedLauncher:
    hardware: str = "H100-SXM"

    def command(self, settings: EngineSettings, flags: list[str]) -> list[str]:
        hardware = self.hardware
        if hardware.endswith((".yaml", ".yml")):  # a profile file: absolute for the child
            hardware = str(Path(hardware).resolve())
        return [
            sys.executable,
            "-m",
            "kvbench.cli",
            "emulate",
            "serve",
            settings.model,
            "--hardware",
            hardware,
            *self.compat_flags([*flags, *settings.extra_args]),
            *flags,
        ]

    def compat_flags(self, flags: list[str]) -> list[str]:
        """`--vllm-compat` of the vLLM release a calibrated profile was measured with, unless the
        flags choose one: an emulated run then follows the real one it is compared with."""
        if "--vllm-compat" in flags:
            return []
        from kvbench.emulator.engine.compat import compat_for_version
        from kvbench.spec.catalogs import get_hardware

        version = get_hardware(self.hardware).vllm_version
        return ["--vllm-compat", compat_for_version(version)] if version else []

    def environment(self, scenario_env: dict[str, str]) -> dict[str, str]:
        return {**clean_environment(), "PYTHONUNBUFFERED": "1", **scenario_env}


def clean_environment() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCENARIO_ENV_PREFIXES) and k not in _SCENARIO_ENV_NAMES
    }


@dataclass
class RunningStack:
    scenario: str
    settings: EngineSettings
    rendered: RenderedScenario  # engine 0's rendering (all engines share everything but the topic)
    engine_urls: list[str]
    router_url: str | None
    store: KVStoreServer | None
    processes: ProcessSet
    log_dir: Path
    decision_log: Path | None = None
    stopped: bool = False

    @property
    def base_url(self) -> str:
        return self.router_url or self.engine_urls[0]

    def pids(self) -> dict[str, int]:
        pids = self.processes.pids()
        if self.store is not None and self.store.pid:
            pids[f"{self.store.kind}"] = self.store.pid
        return pids

    def metrics_sources(self) -> dict[str, str]:
        sources = {f"engine-{i}": f"{url}/metrics" for i, url in enumerate(self.engine_urls)}
        if self.router_url:
            sources["router"] = f"{self.router_url}/metrics"
        return sources

    def stop(self) -> None:
        if self.stopped:
            return
        self.processes.stop_all()
        if self.store is not None:
            self.store.stop()
        self.stopped = True


@dataclass
class _Ports:
    engines: list[int]
    router: int
    events: int
    replays: list[int] = field(default_factory=list)


def _runtime(
    settings: EngineSettings, store: KVStoreServer | None, ports: _Ports, index: int, events: bool
) -> Runtime:
    store_url = f"{store.kind}://{HOST}:{store.port}" if store else None
    return Runtime(
        model=settings.model,
        served_model_name=settings.served_model_name,
        block_size=settings.routing_block_size,
        pod_address=f"{HOST}:{ports.engines[index]}",
        kv_store_url=store_url,
        kv_store_address=store_url,
        kv_events_endpoint=f"tcp://{HOST}:{ports.events}",
        kv_events_bind=f"tcp://{HOST}:{ports.events}",
        kv_events_replay_endpoint=f"tcp://{HOST}:{ports.replays[index]}" if events else None,
    )


def _start_store(
    catalog: ScenarioCatalog, scenario: str, params: dict[str, Any], settings: EngineSettings
) -> KVStoreServer | None:
    need = catalog.get(scenario).kv_store
    if need is None:
        return None
    probe = render_scenario(
        catalog,
        scenario,
        params,
        Runtime(
            settings.model,
            settings.served_model_name,
            kv_store_url="redis://x:0",
            kv_store_address="redis://x:0",
            pod_address="x",
            kv_events_endpoint="tcp://x:0",
            kv_events_bind="tcp://x:0",
        ),
    )
    intended = store_maxmemory_bytes(probe)
    maxmemory = int(intended * REMOTE_PAYLOAD_SCALE) + STORE_BASE_BYTES if intended else None
    try:
        return KVStoreServer(need.kind, maxmemory_bytes=maxmemory).start()
    except StoreUnavailable as err:
        raise StartError(f"{need.kind} store for {scenario} did not start: {err}") from None


def start_stack(
    catalog: ScenarioCatalog,
    scenario: str,
    params: dict[str, Any],
    settings: EngineSettings,
    log_dir: Path,
    launcher: EngineLauncher | None = None,
    with_router: bool = True,
    startup_timeout_s: float = 60.0,
    router_seed: int = 0,
) -> RunningStack:
    launcher = launcher or EmulatedLauncher()
    log_dir.mkdir(parents=True, exist_ok=True)
    events = catalog.get(scenario).kv_events_config is not None
    ports = _Ports(
        engines=[free_port() for _ in range(settings.engines)],
        router=free_port(),
        events=free_port(),
        replays=[free_port() for _ in range(settings.engines)],
    )
    store = _start_store(catalog, scenario, params, settings)
    processes = ProcessSet(stop_signal=getattr(launcher, "stop_signal", signal.SIGTERM))
    try:
        rendered = [
            render_scenario(catalog, scenario, params, _runtime(settings, store, ports, i, events))
            for i in range(settings.engines)
        ]
        engine_urls = [f"http://{HOST}:{port}" for port in ports.engines]
        router_url, decision_log = None, None
        if with_router:
            router_url, decision_log = _spawn_router(
                processes, rendered[0], engine_urls, ports, events, log_dir, router_seed
            )
        for index, (port, one) in enumerate(zip(ports.engines, rendered)):
            argv = launcher.command(
                settings, settings.flags(port) + one.engine_args + list(settings.extra_args)
            )
            processes.spawn(
                f"engine-{index}",
                argv,
                launcher.environment(one.engine_env),
                log_dir / f"engine-{index}.log",
                f"{engine_urls[index]}/health",
            )
        # engines first: the router's /health turns 200 only once it sees a ready engine
        wait_healthy(
            sorted(processes.processes, key=lambda p: p.name == "router"), startup_timeout_s
        )
    except BaseException:
        processes.stop_all()
        if store is not None:
            store.stop()
        raise
    return RunningStack(
        scenario,
        settings,
        rendered[0],
        engine_urls,
        router_url,
        store,
        processes,
        log_dir,
        decision_log,
    )


def _spawn_router(
    processes: ProcessSet,
    rendered: RenderedScenario,
    engine_urls: list[str],
    ports: _Ports,
    events: bool,
    log_dir: Path,
    seed: int,
) -> tuple[str, Path]:
    config_path = log_dir / "epp-config.yaml"
    config_path.write_text(rendered.epp_config_yaml())
    decision_log = log_dir / "router-decisions.jsonl"
    argv = [
        sys.executable,
        "-m",
        "kvbench.cli",
        "emulate",
        "router",
        "--config",
        str(config_path),
        "--host",
        HOST,
        "--port",
        str(ports.router),
        "--decision-log",
        str(decision_log),
        "--seed",
        str(seed),
    ]
    for url in engine_urls:
        argv += ["--endpoint", url]
    if events:
        for port, replay in zip(ports.engines, ports.replays):
            argv += ["--replay-endpoint", f"{HOST}:{port}=tcp://{HOST}:{replay}"]
    router_url = f"http://{HOST}:{ports.router}"
    env = {**clean_environment(), "PYTHONUNBUFFERED": "1"}
    processes.spawn("router", argv, env, log_dir / "router.log", f"{router_url}/health")
    return router_url, decision_log


# ----------------------------------------------------------------------------- kvbench emulate stack


def settings_from_spec(
    target_spec: Any, model: str, overrides: dict[str, Any], seed: int
) -> EngineSettings:
    """Target spec fields, overridden by the cell's engine params; a field the spec lacks (the vllm
    target has no gpu_memory_utilization, ...) stays None: the server's own default applies."""

    def pick(name: str) -> Any:
        return overrides.get(name, getattr(target_spec, name, None))

    extra_args = tuple(getattr(target_spec, "extra_args", ()) or ())
    block_size = getattr(target_spec, "block_size", None) or _flag_value(extra_args, "--block-size")
    return EngineSettings(
        model=model,
        served_model_name=model,
        engines=int(pick("engines") or 1),
        tensor_parallel_size=int(pick("tensor_parallel_size") or 1),
        gpu_memory_utilization=pick("gpu_memory_utilization"),
        num_gpu_blocks_override=pick("num_gpu_blocks_override"),
        max_num_seqs=pick("max_num_seqs"),
        max_num_batched_tokens=pick("max_num_batched_tokens"),
        max_model_len=pick("max_model_len"),
        block_size=int(block_size) if block_size else None,
        seed=seed,
        extra_args=extra_args,  # a --block-size here repeats the same value: argparse keeps the last
    )


def _flag_value(args: tuple[str, ...], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def main(spec_path: Path, scenario: str | None) -> int:
    """Start the spec's first model with `scenario` (default: its first) and keep it up until Ctrl-C."""
    import threading

    from kvbench.errors import UserError
    from kvbench.spec.experiment import load_spec
    from kvbench.spec.scenarios import catalog_for_spec, engine_overrides, resolve_experiment

    spec = load_spec(resolve_experiment(spec_path))
    if spec.target.kind != "emulated":
        raise UserError(
            f"{spec_path}: target.kind is {spec.target.kind!r}; `emulate stack` needs kind: emulated"
        )
    catalog = catalog_for_spec(spec)
    name = scenario or spec.scenarios[0]
    catalog.get(name)
    model = spec.models[0]
    params = {key: values[0] for key, values in spec.scenario_params.items()}
    settings = settings_from_spec(
        spec.target, model, engine_overrides(catalog, name, params, model), spec.seed
    )
    log_dir = Path("kvbench-runs") / "stack-logs" / name
    try:
        stack = start_stack(
            catalog, name, params, settings, log_dir, EmulatedLauncher(spec.target.hardware)
        )
    except StartError as err:
        print(f"kvbench: {err}\n{err.log_tail or ''}", file=sys.stderr)
        return 1
    print(f"{name}: {model} x {settings.engines} engine(s) up; send load to {stack.base_url}")
    for source, url in stack.metrics_sources().items():
        print(f"  {source}: {url}")
    print(f"  logs: {log_dir}   (Ctrl-C stops everything)", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # handlers run between the short waits below
        signal.signal(sig, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.2):
            pass
    finally:
        stack.stop()
    print(f"{name}: stopped", flush=True)
    return 0
