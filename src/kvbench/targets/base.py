"""The Target contract: bring a (model, scenario) up, reset its caches, take it down.

The runner knows only this protocol; each system under test (emulated | vllm | k8s | endpoint)
implements it in its own module and `kvbench.targets.build_target` picks one from the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from kvbench.results.layout import SystemUnderTest


@dataclass
class Deployment:
    """A running (model, scenario): where to send load and what to scrape."""

    model: str
    scenario: str
    served_model_name: str
    base_url: str  # where the load goes: the router if there is one, else the (single) engine
    api_urls: list[str] = field(default_factory=list)  # every OpenAI-compatible server (engines)
    metrics_sources: dict[str, str] = field(
        default_factory=dict
    )  # name ("engine-0", "router") -> /metrics URL
    pids: dict[str, int] = field(default_factory=dict)  # processes this target started, by name
    details: dict[str, Any] = field(
        default_factory=dict
    )  # scenario facts for cell.json (capacities, ...)


class TargetError(RuntimeError):
    """The target could not be brought up; `log_tail` holds the end of its log."""

    def __init__(self, message: str, log_tail: str | None = None):
        super().__init__(message)
        self.log_tail = log_tail


class Target(Protocol):
    def describe(self) -> SystemUnderTest: ...

    def up(self, model: str, scenario: str, scenario_params: dict[str, Any]) -> Deployment: ...

    def reset_caches(
        self, deployment: Deployment
    ) -> dict[str, Any]: ...  # what was reset, per component

    def down(
        self, deployment: Deployment
    ) -> None: ...  # idempotent; every process it started is gone
