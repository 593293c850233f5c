"""What was run, as typed values read from the run directory: per (model, scenario) the engine
command, environment, router config, KV store and KV capacities; the workload's parameters and
working set; the load profile and measure windows.

`scenario_setup` is the one place that reads a cell's recorded deployment; everything the report
says about the setup comes from these values. Capacities are in tokens as recorded by the target,
converted to bytes with the model profile's KV bytes per token (K and V of every layer) where the
model is in the catalog.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kvbench.analysis.load import CellData, RunData
from kvbench.errors import UserError
from kvbench.results.cell import WorkingSetReport
from kvbench.results.deployment import DeploymentFacts, KvStoreFacts
from kvbench.spec.catalogs import get_model

GB = 1e9


@dataclass(frozen=True)
class TierCapacity:
    tier: str  # "GPU", "CPU", "remote"
    tokens: int | None  # whole deployment
    tokens_per_engine: int | None
    bytes: float | None  # tokens x KV bytes per token; None when the model profile is unknown

    @property
    def gb_text(self) -> str:
        return "n/a" if self.bytes is None else f"{self.bytes / GB:.2f}"


@dataclass(frozen=True)
class WorkingSet:
    unique_prefix_tokens: int | None
    history_tokens: int | None
    working_set_tokens: int | None
    over_gpu: float | None  # working set / GPU KV capacity
    over_cpu: float | None


@dataclass
class ScenarioSetup:
    model: str
    scenario: str
    engine_command: str  # `vllm serve MODEL <scenario flags>` as the target ran it
    engine_env: dict[str, str]
    router_config_path: str | None
    kv_store: str | None  # "redis (lmcache-remote, maxmemory 9.0 MB)"
    engines: dict[str, str]  # engine-0 -> its base URL in the first cell
    capacities: list[TierCapacity]
    scenario_params: dict[str, Any]
    working_set: WorkingSet | None
    conversations: int | None


@dataclass
class LoadFacts:
    strategy: str
    level_unit: str
    levels: list[float]
    duration_s: float | None
    requests_per_level: int | None
    warmup_s: float
    cooldown_s: float
    stagger_s: float | None
    repeats: int
    windows_s: list[float] = field(default_factory=list)  # measure window per ok cell


def kv_bytes_per_token(model: str) -> int | None:
    try:
        return get_model(model).kv_bytes_per_token
    except UserError:  # a model outside the catalog (an endpoint run): no bytes, tokens only
        return None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return int(value)
    return None


def _capacity(
    tier: str, total: Any, per_engine: Any, engines: int, per_token: int | None
) -> TierCapacity:
    if isinstance(per_engine, list):
        per_engine = per_engine[0] if per_engine else None
    tokens, each = _int_or_none(total), _int_or_none(per_engine)
    if tokens is None and each is not None:
        tokens = each * engines
    nbytes = None if tokens is None or per_token is None else float(tokens * per_token)
    return TierCapacity(tier, tokens, each, nbytes)


def engine_command(
    model: str,
    target: dict[str, Any],
    scenario_args: list[str],
    overrides: dict[str, Any] | None = None,
) -> str:
    """The engine's command line: `vllm serve MODEL` (`kvbench emulate serve MODEL --hardware H` on
    the emulated target), the target's engine flags as the local stacks pass them (host, port and
    seed differ per engine and are left out; `overrides` = the scenario's engine settings), then
    the scenario's own flags."""
    flags: list[str] = []
    emulated = target.get("kind") in ("emulated", "simulated")
    program = "kvbench emulate serve" if emulated else "vllm serve"
    if target.get("kind") in ("emulated", "simulated", "vllm"):
        from kvbench.emulator.stack import settings_from_spec

        settings = settings_from_spec(SimpleNamespace(**target), model, overrides or {}, 0)
        flags = _drop_flag_values(
            settings.flags(0), ("--host", "--port", "--seed", "--served-model-name")
        )
        if emulated:
            flags += ["--hardware", str(target.get("hardware"))]
    parts = [program, model, shlex.join(flags), shlex.join(scenario_args)]
    return " ".join(part for part in parts if part)


def _drop_flag_values(flags: list[str], names: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for flag in flags:
        if skip:
            skip = False
            continue
        if flag in names:
            skip = True
            continue
        out.append(flag)
    return out


def scenario_setup(cell: CellData, target: dict[str, Any] | None = None) -> ScenarioSetup:
    """The setup one cell ran (the first cell of a (model, scenario) stands for all its cells);
    `target` = the spec snapshot's target section."""
    target = target or {}
    record = cell.info.deployment
    facts = record.facts if record is not None else DeploymentFacts()
    engines = int(facts.engines or 1)
    per_token = kv_bytes_per_token(cell.info.model)
    capacities = [
        _capacity(
            "GPU",
            facts.gpu_kv_capacity_tokens,
            facts.gpu_kv_capacity_tokens_per_engine,
            engines,
            per_token,
        ),
        _capacity(
            "CPU",
            facts.cpu_kv_capacity_tokens,
            facts.cpu_kv_capacity_tokens_per_engine,
            engines,
            per_token,
        ),
        _capacity("remote", facts.remote_kv_capacity_tokens, None, 1, per_token),
    ]
    workload = cell.info.workload
    return ScenarioSetup(
        model=cell.info.model,
        scenario=cell.info.scenario,
        engine_command=engine_command(cell.info.model, target, [str(a) for a in facts.engine_args]),
        engine_env=dict(facts.engine_env),
        router_config_path=_rendered_router_config(facts),
        kv_store=_kv_store_text(facts.store),
        engines=_engine_urls(cell),
        capacities=[c for c in capacities if c.tokens is not None],
        scenario_params=dict(cell.info.swept_params),
        working_set=_working_set(workload.capacity) if workload is not None else None,
        conversations=workload.conversations if workload is not None else None,
    )


def _rendered_router_config(facts: DeploymentFacts) -> str | None:
    """The EPP config as the router read it (placeholders filled: `<logs>/epp-config.yaml`), else
    the catalog template it came from."""
    if facts.logs_path and (Path(facts.logs_path) / "epp-config.yaml").is_file():
        return str(Path(facts.logs_path) / "epp-config.yaml")
    return facts.epp_config_path


def _working_set(capacity: WorkingSetReport) -> WorkingSet | None:
    if capacity.working_set_tokens is None:
        return None
    return WorkingSet(
        unique_prefix_tokens=capacity.unique_prefix_tokens,
        history_tokens=capacity.history_tokens,
        working_set_tokens=capacity.working_set_tokens,
        over_gpu=capacity.working_set_over_gpu,
        over_cpu=capacity.working_set_over_cpu,
    )


def _kv_store_text(store: KvStoreFacts | None) -> str | None:
    if store is None:
        return None
    extras = [store.role] if store.role else []
    if store.maxmemory_bytes is not None:
        extras.append(f"maxmemory {store.maxmemory_bytes / 1e6:.1f} MB")
    return store.kind + (f" ({', '.join(extras)})" if extras else "")


def _engine_urls(cell: CellData) -> dict[str, str]:
    """engine-N -> base URL, from the cell's metric sources (`.../metrics` stripped)."""
    return {
        name: url.removesuffix("/metrics")
        for name, url in sorted(cell.info.sources.items())
        if name.startswith("engine")
    }


def setups(run: RunData) -> list[ScenarioSetup]:
    """One setup per (model, scenario), from its first ok cell (else its first cell)."""
    chosen: dict[tuple[str, str], CellData] = {}
    for cell in run.cells:
        key = (cell.info.model, cell.info.scenario)
        if key not in chosen or (cell.ok and not chosen[key].ok):
            chosen[key] = cell
    order = run.scenarios()
    ordered = sorted(chosen.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1])))
    spec = run.manifest.spec if isinstance(run.manifest.spec, dict) else {}
    target = spec.get("target") if isinstance(spec.get("target"), dict) else {}
    return [scenario_setup(cell, target) for _, cell in ordered]


def load_facts(run: RunData) -> LoadFacts:
    spec = run.manifest.spec if isinstance(run.manifest.spec, dict) else {}
    load = spec.get("load") or {}
    windows = [
        float(c.info.measure_end_s - c.info.measure_start_s)
        for c in run.cells
        if c.ok and c.info.measure_start_s is not None and c.info.measure_end_s is not None
    ]
    return LoadFacts(
        strategy=run.manifest.strategy,
        level_unit=run.manifest.level_unit or "",
        levels=sorted({float(c.info.level) for c in run.cells}),
        duration_s=load.get("duration_s"),
        requests_per_level=load.get("requests_per_level"),
        warmup_s=float(load.get("warmup_s") or 0.0),
        cooldown_s=float(load.get("cooldown_s") or 0.0),
        stagger_s=_stagger_s(load),
        repeats=len({c.info.repeat for c in run.cells}),
        windows_s=windows,
    )


def _stagger_s(load: dict[str, Any]) -> float | None:
    if "stagger_s" not in load:  # a run made before streams were staggered
        return None
    if load["stagger_s"] is not None:
        return float(load["stagger_s"])
    warmup = float(load.get("warmup_s") or 0.0)
    return warmup if warmup > 0 else 1.0


def router_config_text(path: str | None) -> str | None:
    """The EndpointPickerConfig YAML the router ran, when its file is readable."""
    if not path:
        return None
    try:
        return Path(path).read_text()
    except OSError:
        return None


SPEC_SNAPSHOT_FILE = "spec.yaml"


def write_spec_snapshot(run: RunData, report_dir: Path) -> Path | None:
    """The spec exactly as the run loaded it (manifest.json's snapshot), as YAML `kvbench run` takes."""
    import yaml

    spec = run.manifest.spec if isinstance(run.manifest.spec, dict) else {}
    if not spec.get("models"):  # an imported run has no spec to run again
        return None
    path = report_dir / SPEC_SNAPSHOT_FILE
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def reproduce_command(run: RunData, spec_path: Path | None) -> str | None:
    """The `kvbench run` that makes this run again, from the spec snapshot; None without one."""
    if spec_path is None:
        return None
    again = f"{run.run_dir.name}-again"
    return f"kvbench run {shlex.quote(str(spec_path))} --out {shlex.quote(again)}"
