"""The Target contract: bring a (model, scenario) up, reset its caches, take it down.

The runner knows only this protocol; each system under test (emulated | vllm | k8s | endpoint)
implements it in its own module and `kvbench.targets.build_target` picks one from the spec.

Implementing a target:
- `up(model, scenario, scenario_params, catalog=...)` gets the base scenario's name, every param
  applied to the cell (swept and single-valued) and the run's scenario catalog (built-ins plus the
  spec's scenario_files; None only when called outside a run, meaning the built-ins). It returns a
  `Deployment` with typed `facts` (results/deployment.py: capacities in tokens, tiers, store,
  engines, router); raise TargetError (with the log tail) when it cannot come up.
- `reset_caches(deployment)` returns a `ResetResult`, one `ComponentReset` per component; it must
  not mutate the deployment (new metrics endpoints go in `ResetResult.metrics_sources`).
- `down(deployment)` is idempotent; every process the target started is gone afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kvbench.results.deployment import (
    ComponentReset,
    DeploymentFacts,
    K8sApplyFacts,
    KvStoreFacts,
    KvTier,
    ResetResult,
)
from kvbench.results.manifest import SystemUnderTest

if TYPE_CHECKING:
    from kvbench.spec.scenarios import ScenarioCatalog


@dataclass
class Deployment:
    """A running (model, scenario): where to send load and what to scrape."""

    model: str
    scenario: str  # the base scenario's name
    served_model_name: str
    base_url: str  # where the load goes: the router if there is one, else the (single) engine
    api_urls: list[str] = field(default_factory=list)  # every OpenAI-compatible server (engines)
    # name ("engine-0", "router") -> /metrics URL
    metrics_sources: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)  # processes this target started, by name
    facts: DeploymentFacts = field(default_factory=DeploymentFacts)  # written to cell.json


class TargetError(RuntimeError):
    """The target could not be brought up; `log_tail` holds the end of its log."""

    def __init__(self, message: str, log_tail: str | None = None):
        super().__init__(message)
        self.log_tail = log_tail


class Target(Protocol):
    def describe(self) -> SystemUnderTest: ...

    def up(
        self,
        model: str,
        scenario: str,
        scenario_params: dict[str, Any],
        *,
        catalog: ScenarioCatalog | None = None,
    ) -> Deployment: ...

    def reset_caches(self, deployment: Deployment) -> ResetResult: ...

    def down(self, deployment: Deployment) -> None: ...


__all__ = [
    "ComponentReset",
    "Deployment",
    "DeploymentFacts",
    "K8sApplyFacts",
    "KvStoreFacts",
    "KvTier",
    "ResetResult",
    "Target",
    "TargetError",
]
