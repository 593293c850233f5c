"""cell.json: one cell's identity, plan, deployment, cache protocol, summary and validity notes.

`CellInfo` is written by the runner (experiment/) and by importers (results/guidellm_import.py)
and read by analysis; every key is declared here and unknown keys are rejected. The numbers in
`summary` come from `results.summary.summarize` only. Times are seconds on the run clock.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kvbench.results.deployment import DeploymentFacts, ResetResult
from kvbench.results.manifest import (
    SCHEMA_VERSION,
    CellIdentity,
    CellRef,
    CellStatus,
    IdentityFields,
    ParamValue,
)
from kvbench.results.summary import CellSummary


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkingSetReport(_Strict):
    """The workload's working set against each KV capacity the target reported (ratio > 1: it
    cannot all stay in that tier)."""

    unique_prefix_tokens: int | None = None
    history_tokens: int | None = None
    working_set_tokens: int | None = None
    gpu_kv_capacity_tokens: int | None = None
    working_set_over_gpu: float | None = None
    cpu_kv_capacity_tokens: int | None = None
    working_set_over_cpu: float | None = None
    notes: list[str] = Field(default_factory=list)  # capacity-aware sizing: what was changed


class WorkloadFacts(_Strict):
    kind: str  # the workload generator (multi_turn_shared_prefix, replay, ...)
    conversations: int
    seed: int
    capacity: WorkingSetReport = Field(default_factory=WorkingSetReport)


class LevelPlanFacts(_Strict):
    """What the load generator was asked to run (loadgen.LevelPlan)."""

    strategy: str
    level: float  # streams (concurrent / throughput) or req/s (constant / poisson)
    duration_s: float | None = None
    max_requests: int | None = None
    warmup_s: float = 0.0
    cooldown_s: float = 0.0
    max_concurrency: int | None = None
    seed: int = 0
    # concurrent: streams' first requests spread over this many seconds (seeded); None = a run
    # made before streams were staggered (all at once)
    stagger_s: float | None = None


class DeploymentRecord(_Strict):
    base_url: str
    served_model_name: str
    facts: DeploymentFacts = Field(default_factory=DeploymentFacts)


class CacheProtocol(_Strict):
    """reset -> prime -> verify (experiment/cache_state.py)."""

    reset_requested: bool = False
    prime_requested: bool = False
    reset: ResetResult | None = None  # None: no reset was attempted
    primed_prefixes: int | None = None
    prime_counts: dict[str, int] = Field(default_factory=dict)
    expected_state: str = "unknown"  # cold | warm | unknown
    verify: dict[str, Any] | None = None  # cache_state.FirstUseTally.verdict + counter deltas


class ScrapeStats(_Strict):
    scrapes_ok: dict[str, int] = Field(default_factory=dict)
    scrapes_failed: dict[str, int] = Field(default_factory=dict)
    last_error: dict[str, str] = Field(default_factory=dict)
    collector_error: str | None = None


class DegradationCounts(_Strict):
    """What the system under test could not do during the cell's load, counted from the servers'
    own counters (collect/degradation.py). None: not measured (no source exports the counter),
    never "0"."""

    store_errors: int | None = None  # LMCache remote-store operations that failed
    store_skipped: int | None = None  # ... skipped while the store was known down (breaker open)
    index_lookup_failures: int | None = None  # router KV-block index lookups that failed
    kv_events_lost: int | None = None  # KV-event messages the router never applied
    kv_events_apply_failures: int | None = None  # ... the index store failed to apply
    engine_ejections: int | None = None  # engines the router took out of routing
    store_writes_refused: int | None = None  # writes the Redis / Valkey server refused (OOM)
    store_connections_rejected: int | None = None  # connections it refused (out of clients)
    failed_resets: int | None = None  # KV-holding components whose cache reset did not happen
    unscraped_sources: list[str] = Field(default_factory=list)  # not counted: scrape failed

    def problems(self) -> dict[str, int]:
        """The kinds that happened in the cell (count > 0)."""
        values = self.model_dump(exclude={"unscraped_sources"})
        return {kind: value for kind, value in values.items() if value}


class CellValidity(_Strict):
    """What the writer already knows about the cell's trustworthiness (analysis adds its checks)."""

    loadgen_notes: list[str] = Field(default_factory=list)
    return_token_ids: bool | None = None
    scrape: ScrapeStats | None = None
    scrape_failures: int | None = None
    cache_state_consistent: bool | None = None
    peak_in_flight: int | None = None
    itl_available: bool = True  # False: the source recorded no per-token times
    source_file: str | None = None  # an imported cell's file
    guidellm_benchmark_id: str | None = None
    guidellm_incomplete_requests: int | None = None  # cancelled by GuideLLM at the end
    note: str | None = None
    degradation: DegradationCounts | None = None  # None: the writer measured none


class CellInfo(IdentityFields):
    schema_version: int = SCHEMA_VERSION
    cell_id: str
    scenario: str  # the label, scenario_label(base_scenario, swept_params)
    # Every knob applied to the cell (swept and single-valued); swept_params is its identity part.
    scenario_params: dict[str, ParamValue] = Field(default_factory=dict)
    strategy: str = "concurrent"
    status: CellStatus = CellStatus.PENDING
    started_at: str | None = None  # ISO 8601 UTC
    ended_at: str | None = None
    # The window whose requests count in statistics (warmup/cooldown excluded).
    measure_start_s: float | None = None
    measure_end_s: float | None = None
    error: str | None = None
    log_tail: str | None = None
    sources: dict[str, str] = Field(default_factory=dict)  # metrics source name -> scraped URL
    workload: WorkloadFacts | None = None
    level_plan: LevelPlanFacts | None = None
    deployment: DeploymentRecord | None = None
    cache_protocol: CacheProtocol | None = None
    # The load client's own health: dispatch / event-loop lag, CPU (live), or the simulation's
    # clock and step counts (simulated target).
    client: dict[str, float | int | bool | None] = Field(default_factory=dict)
    summary: CellSummary | None = None
    validity: CellValidity = Field(default_factory=CellValidity)

    @classmethod
    def new(
        cls,
        identity: CellIdentity,
        strategy: str = "concurrent",
        scenario_params: dict[str, ParamValue] | None = None,
    ) -> CellInfo:
        """A fresh cell; `scenario_params` defaults to the swept ones (all a cell may have)."""
        return cls(
            **identity.model_dump(),
            cell_id=identity.cell_id,
            scenario=identity.scenario_label,
            strategy=strategy,
            scenario_params=dict(
                identity.swept_params if scenario_params is None else scenario_params
            ),
        )

    @classmethod
    def from_ref(cls, ref: CellRef) -> CellInfo:
        """A cell that has no cell.json yet: what the manifest knows."""
        return cls(**ref.model_dump())
