"""The scenario catalog: the seeds' seven configurations, typed, parameterised and rendered.

A scenario (spec/catalog/scenarios.yaml, or a user file named by the spec's `scenario_files`) holds
vLLM's `--kv-transfer-config` verbatim, other vLLM flags, the engines' environment, the KV-events
config, the router's EndpointPickerConfig (a file in spec/catalog/epp/) and the KV store it needs.

Parameters (contract):
- Every knob has a default in the catalog's `params:`; a scenario may override defaults in its own
  `params:`; a cell's `scenario_params` (one value per swept knob) override both. A knob that is
  not declared anywhere is a UserError; a knob a scenario does not reference is simply unused.
- A param value may be a mapping keyed by model name (`{Qwen/Qwen3-8B: 64000, default: 10000}`):
  it resolves to the cell's model's entry (full name, then the part after '/'), else `default`.
- ENGINE_PARAMS (engines, gpu_memory_utilization, ...) are not placeholders: targets read them to
  override their own spec for that cell (`engine_overrides`).
- `${name}` placeholders take a param or a runtime value (RUNTIME_NAMES, supplied by the target).
  A string that is exactly `${name}` takes the value with its type; a null value then drops the
  mapping key holding it. Inside a longer string the value is formatted with str().
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kvbench.errors import UserError
from kvbench.results.manifest import OffloadTier, Routing, ScenarioKind

BUILTIN_SCENARIOS = (
    "no-offload",
    "native-offload",
    "lmcache-local",
    "lmcache-redis",
    "lmcache-valkey",
    "llm-d-redis",
    "llm-d-valkey",
)
RUNTIME_NAMES = (
    "kv_store_url",
    "kv_store_address",
    "kv_events_endpoint",
    "kv_events_bind",
    "kv_events_replay_endpoint",
    "pod_address",
    "served_model_name",
    "model",
    "block_size",
)
# Knobs a target applies to its engines for one cell (override the target spec's value).
ENGINE_PARAMS = (
    "engines",
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "num_gpu_blocks_override",
    "max_num_seqs",
    "max_num_batched_tokens",
    "max_model_len",
)
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DROP = object()  # a whole-string placeholder whose value is null: leave the key out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KVStoreNeed(_Strict):
    kind: Literal["redis", "valkey"]
    role: Literal["lmcache-remote", "kv-block-index"]


class KindDeclaration(_Strict):
    """What a scenario is (results.manifest.ScenarioKind without the store, which kv_store says)."""

    offload: OffloadTier
    routing: Routing


class Scenario(_Strict):
    name: str = ""
    description: str = ""
    kind: KindDeclaration
    kv_store: KVStoreNeed | None = None
    kv_transfer_config: dict[str, Any] | None = None
    kv_events_config: dict[str, Any] | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, Any] = Field(default_factory=dict)
    epp_config: str = "${epp_config}"
    params: dict[str, Any] = Field(default_factory=dict)
    notes: str = ""
    seed_config: str = ""  # how the seed configured it, verbatim, for the report

    @model_validator(mode="after")
    def _remote_tier_needs_its_store(self) -> Scenario:
        remote_store = self.kv_store is not None and self.kv_store.role == "lmcache-remote"
        if (self.kind.offload == "lmcache-remote") != remote_store:
            raise ValueError(
                "kind.offload is lmcache-remote exactly when kv_store.role is lmcache-remote"
            )
        return self

    def declared_kind(self) -> ScenarioKind:
        return ScenarioKind(
            offload=self.kind.offload,
            routing=self.kind.routing,
            store=self.kv_store.kind if self.kv_store else None,
            store_role=self.kv_store.role if self.kv_store else None,
        )


class ScenarioFile(_Strict):
    params: dict[str, Any] = Field(default_factory=dict)
    scenarios: dict[str, Scenario] = Field(default_factory=dict)


@dataclass(frozen=True)
class ScenarioCatalog:
    params: dict[str, Any]  # declared knobs and their defaults
    scenarios: dict[str, Scenario]
    sources: tuple[str, ...] = ()

    def get(self, name: str) -> Scenario:
        if name not in self.scenarios:
            known = ", ".join(self.scenarios)
            raise UserError(f"scenarios: unknown scenario {name!r} (known: {known})")
        return self.scenarios[name]

    def names(self) -> list[str]:
        return list(self.scenarios)

    def kinds(self, names: Iterable[str]) -> dict[str, ScenarioKind]:
        """What each named scenario is; names the catalog does not hold are left out."""
        return {n: self.scenarios[n].declared_kind() for n in names if n in self.scenarios}


@dataclass(frozen=True)
class Runtime:
    """Values only the target knows (addresses of what it started). None where not applicable."""

    model: str
    served_model_name: str
    block_size: int = 16
    pod_address: str | None = None
    kv_store_url: str | None = None  # what LMCache reads: redis://h:p or valkey://h:p
    kv_store_address: str | None = None  # what the llm-d indexer reads
    kv_events_endpoint: str | None = None  # where engines' PUB sockets connect
    kv_events_bind: str | None = None  # where the EPP's SUB socket binds
    kv_events_replay_endpoint: str | None = None

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RUNTIME_NAMES}


@dataclass(frozen=True)
class RenderedScenario:
    """One engine's view of a scenario, ready to launch."""

    name: str
    params: dict[str, Any]  # resolved knob values (after per-model resolution)
    kv_store: KVStoreNeed | None
    kv_transfer_config: dict[str, Any] | None
    kv_events_config: dict[str, Any] | None
    engine_args: list[str]  # vLLM flags: --kv-transfer-config JSON, --kv-events-config JSON, args
    engine_env: dict[str, str]
    epp_config: dict[str, Any]
    epp_config_source: str
    notes: str = ""
    description: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    def epp_config_yaml(self) -> str:
        return yaml.safe_dump(self.epp_config, sort_keys=False)


# ----------------------------------------------------------------------------- loading


def _catalog_dir() -> Path:
    return Path(str(resources.files("kvbench.spec") / "catalog"))


def _read_scenario_file(path: Path) -> ScenarioFile:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise UserError(f"scenario_files: {path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise UserError(
            f"scenario_files: {path}: invalid YAML ({str(err).splitlines()[0]})"
        ) from None
    try:
        parsed = ScenarioFile.model_validate(data or {})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{path}: {where}: {first['msg']}") from None
    for name, scenario in parsed.scenarios.items():
        scenario.name = name
    return parsed


def load_catalog(extra_files: Iterable[str | Path] = ()) -> ScenarioCatalog:
    """The built-in catalog plus user files (later files add scenarios or replace them by name)."""
    builtin = _catalog_dir() / "scenarios.yaml"
    params: dict[str, Any] = {}
    scenarios: dict[str, Scenario] = {}
    sources = []
    for path in [builtin, *map(Path, extra_files)]:
        parsed = _read_scenario_file(path)
        params.update(parsed.params)
        scenarios.update(parsed.scenarios)
        sources.append(str(path))
    return ScenarioCatalog(params=params, scenarios=scenarios, sources=tuple(sources))


def catalog_for_spec(spec: Any) -> ScenarioCatalog:
    return load_catalog(getattr(spec, "scenario_files", None) or ())


def validate_scenarios(
    catalog: ScenarioCatalog, names: Iterable[str], params: dict[str, list[Any]]
) -> None:
    """Fail early (before anything starts) on an unknown scenario or knob."""
    for name in names:
        catalog.get(name)
    known = set(catalog.params) | set(ENGINE_PARAMS)
    for scenario in catalog.scenarios.values():
        known |= set(scenario.params)
    for key in params:
        if key not in known:
            raise UserError(
                f"scenario_params.{key}: unknown parameter (known: {', '.join(sorted(known))})"
            )


# ----------------------------------------------------------------------------- params


def resolve_value(value: Any, model: str, key: str) -> Any:
    """A per-model mapping resolves to the model's entry; anything else is returned unchanged."""
    if not isinstance(value, dict):
        return value
    short = model.split("/")[-1]
    for candidate in (model, short, "default"):
        if candidate in value:
            return value[candidate]
    raise UserError(f"scenario_params.{key}: no value for model {model!r} and no 'default'")


def resolve_params(
    catalog: ScenarioCatalog, scenario: Scenario, cell_params: dict[str, Any], model: str
) -> dict[str, Any]:
    validate_scenarios(catalog, [], {k: [v] for k, v in cell_params.items()})
    merged = {**catalog.params, **scenario.params, **cell_params}
    return {key: resolve_value(value, model, key) for key, value in merged.items()}


def engine_overrides(
    catalog: ScenarioCatalog, scenario: str, cell_params: dict[str, Any], model: str
) -> dict[str, Any]:
    """The ENGINE_PARAMS set for this cell (scenario defaults, then cell values), resolved per model."""
    params = resolve_params(catalog, catalog.get(scenario), cell_params, model)
    return {key: params[key] for key in ENGINE_PARAMS if params.get(key) is not None}


# ----------------------------------------------------------------------------- substitution


def substitute(node: Any, values: dict[str, Any], where: str) -> Any:
    """Replace `${name}` placeholders throughout a YAML tree (see the module contract)."""
    if isinstance(node, dict):
        out = {}
        for key, child in node.items():
            replaced = substitute(child, values, f"{where}.{key}")
            if replaced is not _DROP:
                out[key] = replaced
        return out
    if isinstance(node, list):
        items = [substitute(child, values, f"{where}[{i}]") for i, child in enumerate(node)]
        if any(item is _DROP for item in items):
            raise UserError(f"{where}: a list item's placeholder is null")
        return items
    if isinstance(node, str):
        return _substitute_string(node, values, where)
    return node


def _lookup(name: str, values: dict[str, Any], where: str) -> Any:
    if name not in values:
        raise UserError(f"{where}: unknown placeholder ${{{name}}}")
    return values[name]


def _substitute_string(text: str, values: dict[str, Any], where: str) -> Any:
    whole = _PLACEHOLDER.fullmatch(text)
    if whole:
        value = _lookup(whole.group(1), values, where)
        return _DROP if value is None else value

    def one(match: re.Match) -> str:
        value = _lookup(match.group(1), values, where)
        if value is None:
            raise UserError(f"{where}: ${{{match.group(1)}}} has no value here")
        return str(value)

    return _PLACEHOLDER.sub(one, text)


# ----------------------------------------------------------------------------- rendering


def _load_epp(reference: str, values: dict[str, Any], where: str) -> tuple[dict[str, Any], str]:
    path = Path(reference)
    if not path.suffix:
        path = _catalog_dir() / "epp" / f"{reference}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (_catalog_dir() / "epp").glob("*.yaml"))
        raise UserError(
            f"{where}: no EPP config {reference!r} (bundled: {', '.join(known)}; or a .yaml path)"
        )
    document = yaml.safe_load(path.read_text())
    return substitute(document, values, f"{where}({path.name})"), str(path)


def _env_text(value: Any) -> str:
    return str(value)  # bools as True/False: LMCache's env parser accepts them


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class _RecordingValues(dict):
    """Placeholder values that remember which names a rendering looked up."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.looked_up: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.looked_up.add(key)
        return super().__getitem__(key)


def params_used_by(catalog: ScenarioCatalog, name: str) -> set[str]:
    """The knobs that change what scenario `name` renders (its flags, env or EPP config), plus the
    ENGINE_PARAMS, which apply to every scenario. Sweeping any other knob cannot change the scenario,
    so the matrix does not repeat it for those values."""
    looked_up: set[str] = set()
    runtime = Runtime(
        "model",
        "model",
        kv_store_url="redis://x:0",
        kv_store_address="redis://x:0",
        pod_address="x:0",
        kv_events_endpoint="tcp://x:0",
        kv_events_bind="tcp://x:0",
        kv_events_replay_endpoint="tcp://x:0",
    )
    render_scenario(catalog, name, {}, runtime, looked_up=looked_up)
    declared = set(catalog.params) | set(catalog.get(name).params)
    return (looked_up & declared) | set(ENGINE_PARAMS)


def render_scenario(
    catalog: ScenarioCatalog,
    name: str,
    cell_params: dict[str, Any],
    runtime: Runtime,
    looked_up: set[str] | None = None,
) -> RenderedScenario:
    """Render one engine's flags and env plus the EPP config for `name` with the cell's params.
    `looked_up`, when given, receives the names of every placeholder the rendering used."""
    scenario = catalog.get(name)
    params = resolve_params(catalog, scenario, cell_params, runtime.model)
    values = _RecordingValues({**params, **runtime.values()})
    where = f"scenario {name}"
    kv_transfer = (
        substitute(scenario.kv_transfer_config, values, f"{where}.kv_transfer_config")
        if scenario.kv_transfer_config
        else None
    )
    kv_events = (
        substitute(scenario.kv_events_config, values, f"{where}.kv_events_config")
        if scenario.kv_events_config
        else None
    )
    env = substitute(scenario.env, values, f"{where}.env")
    epp_ref = substitute(scenario.epp_config, values, f"{where}.epp_config")
    epp_config, epp_source = _load_epp(str(epp_ref), values, f"{where}.epp_config")
    args = list(substitute(scenario.args, values, f"{where}.args"))
    if kv_transfer:
        args += ["--kv-transfer-config", compact_json(kv_transfer)]
    if kv_events:
        args += ["--kv-events-config", compact_json(kv_events)]
    if looked_up is not None:
        looked_up |= values.looked_up
    return RenderedScenario(
        name=name,
        params=params,
        kv_store=scenario.kv_store,
        kv_transfer_config=kv_transfer,
        kv_events_config=kv_events,
        engine_args=[str(a) for a in args],
        engine_env={k: _env_text(v) for k, v in env.items()},
        epp_config=epp_config,
        epp_config_source=epp_source,
        notes=scenario.notes,
        description=scenario.description,
    )


def store_maxmemory_bytes(rendered: RenderedScenario) -> int | None:
    """An LMCache remote store gets maxmemory (LMCache sets no TTL and leaves eviction to the store);
    a KV-block index gets none."""
    if rendered.kv_store is None or rendered.kv_store.role != "lmcache-remote":
        return None
    megabytes = rendered.params.get("kv_store_maxmemory_mb")
    return int(megabytes * 1024 * 1024) if megabytes else None


# ----------------------------------------------------------------------------- experiment catalog


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (_catalog_dir() / "experiments").glob("*.yaml"))


def resolve_experiment(name_or_path: str | Path) -> Path:
    """A spec file path as given, or the bundled experiment of that name (`llm-d-kvcache-eval`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = _catalog_dir() / "experiments" / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and bundled.is_file():
        return bundled
    raise UserError(
        f"{name_or_path}: no such spec file or bundled experiment (bundled: {', '.join(experiment_names())})"
    )
