"""manifest.json: the run's identity, what was measured, and its cells (schema version 2).

Every model here forbids unknown keys, so a field written but not declared fails at once (on the
writer's side in tests, on the reader's side as one line naming the file). Readers go through
`results/read.py`, which migrates a directory written by the previous schema version.

A cell's identity is data (`CellIdentity`): model, base scenario (the catalog name), the swept
scenario params (a param the spec gives one value is applied to the cell but is not part of its
identity), level and repeat. The label (`native-offload+num_cpu_blocks=2000`) and the cell id
(`Qwen3-8B__native-offload-num_cpu_blocks-2000__12__r0`) are derived from it, never parsed back.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

SCHEMA_VERSION = 2  # manifest.json and cell.json; bump on any change a reader must know about


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CellStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


OffloadTier = Literal["none", "native", "lmcache-local", "lmcache-remote"]
Routing = Literal["round-robin", "approximate", "precise"]


class ScenarioKind(_Strict):
    """What a scenario is, as its catalog entry declares it (analysis reads this, never names).

    offload: where evicted KV goes (none | native: vLLM OffloadingConnector | lmcache-local |
    lmcache-remote: LMCache with a Redis / Valkey tier); routing: how the router picks an engine
    (round-robin | approximate: the EPP's prefix scorer on its own request history | precise:
    scoring on the engines' KV events); store: the Redis / Valkey server it needs, if any."""

    offload: OffloadTier
    routing: Routing
    store: Literal["redis", "valkey"] | None = None
    store_role: Literal["lmcache-remote", "kv-block-index"] | None = None

    @property
    def offloads(self) -> bool:
        return self.offload != "none"

    @property
    def routes_precisely(self) -> bool:
        return self.routing == "precise"


class SystemUnderTest(_Strict):
    """What was measured. Every report states this in its first lines."""

    kind: str  # emulated | vllm | k8s | endpoint | guidellm-import
    emulated: bool  # True: numbers come from the cost model, not from real hardware
    description: str  # one human line, e.g. "emulated vLLM engines, H100-SXM profile, ..."
    details: dict[str, JsonValue] = Field(default_factory=dict)  # the target's own settings


class HostFacts(_Strict):
    hostname: str | None = None
    platform: str | None = None
    python: str | None = None
    cpu_count_logical: int | None = None
    cpu_count_physical: int | None = None
    cpu_model: str | None = None  # /proc/cpuinfo "model name": a small model's steps are CPU-bound
    memory_total_bytes: int | None = None


ParamValue = JsonValue  # a scenario knob's value: a scalar, or a per-model mapping


class IdentityFields(_Strict):
    """The fields that identify a cell (CellIdentity), shared by CellRef and CellInfo."""

    model: str
    base_scenario: str  # the catalog scenario (or, for an endpoint / import, the scenario label)
    swept_params: dict[str, ParamValue] = Field(default_factory=dict)  # only knobs swept (>1 value)
    level: float
    repeat: int

    def identity(self) -> CellIdentity:
        return CellIdentity(**self.model_dump(include=set(IdentityFields.model_fields)))


class CellIdentity(IdentityFields):
    @property
    def scenario_label(self) -> str:
        return scenario_label(self.base_scenario, self.swept_params)

    @property
    def cell_id(self) -> str:
        return make_cell_id(self.model, self.scenario_label, self.level, self.repeat)


class CellRef(IdentityFields):
    """One cell as the manifest lists it; `cell_id` and `scenario` are derived from the identity."""

    cell_id: str
    scenario: str  # the label
    strategy: str = "concurrent"  # what this cell runs: concurrent | constant | ... | throughput
    status: CellStatus = CellStatus.PENDING

    @classmethod
    def new(cls, identity: CellIdentity, strategy: str = "concurrent") -> CellRef:
        return cls(
            **identity.model_dump(),
            cell_id=identity.cell_id,
            scenario=identity.scenario_label,
            strategy=strategy,
        )


class RunManifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    kvbench_version: str
    run_name: str
    created_at: str  # ISO 8601 UTC
    finished_at: str | None = None
    spec: dict[str, Any]  # the spec snapshot as loaded (ExperimentSpec, JSON-able)
    system_under_test: SystemUnderTest
    host: HostFacts = Field(default_factory=HostFacts)
    versions: dict[str, str] = Field(default_factory=dict)  # tool + dependency versions
    strategy: str = "concurrent"  # what `level` means: concurrent -> streams, constant -> req/s
    level_unit: str | None = None  # the level's unit in words, for tables
    clock_origin_unix_s: float | None = None  # wall-clock time of run-clock 0 (records' *_s)
    baseline_scenario: str = "no-offload"
    # base scenario -> what it is (from the catalog); a scenario absent here is of unknown kind.
    scenario_kinds: dict[str, ScenarioKind] = Field(default_factory=dict)
    cells: list[CellRef] = Field(default_factory=list)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def format_level(level: float) -> str:
    return str(int(level)) if float(level).is_integer() else f"{level:g}"


def scenario_label(base_scenario: str, swept_params: dict[str, Any]) -> str:
    """`<scenario>` or `<scenario>+<k>=<v>,...` (swept knobs in sorted order)."""
    if not swept_params:
        return base_scenario
    return base_scenario + "+" + ",".join(f"{k}={swept_params[k]}" for k in sorted(swept_params))


def make_cell_id(model: str, scenario: str, level: float, repeat: int) -> str:
    """`<model>__<scenario label>__<level>__r<repeat>`, filesystem-safe (`Qwen/Qwen3-8B` -> `Qwen3-8B`)."""
    model_part = _UNSAFE.sub("-", model.split("/")[-1])
    scenario_part = _UNSAFE.sub("-", scenario)
    return f"{model_part}__{scenario_part}__{format_level(level)}__r{repeat}"
