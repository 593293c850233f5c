"""Everything one report renders, compiled once by build.compile_report (every format reads this)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kvbench.analysis.guidance import Finding
from kvbench.analysis.hits import HitSplit
from kvbench.analysis.latency import LatencyComparison
from kvbench.analysis.load import RunData
from kvbench.analysis.peaks import Peak
from kvbench.analysis.twins import TwinDelta
from kvbench.analysis.validity import Check, Thresholds
from kvbench.report.figures import Skipped


@dataclass
class ReportData:
    run: RunData
    metrics: pd.DataFrame
    level_summary: pd.DataFrame
    peaks: list[Peak]
    server_peak: pd.DataFrame
    checks: list[Check]
    findings: list[Finding]
    guidance: list[Finding]
    thresholds: Thresholds
    figures: list[Path | Skipped] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # other files written (CSV, BR)
    latency: list[LatencyComparison] = field(default_factory=list)
    routing_endpoints: pd.DataFrame = field(default_factory=pd.DataFrame)
    routing_predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    routing_sentences: list[str] = field(default_factory=list)
    # "model|scenario" -> scorers with weights
    router_scorers: dict[str, str] = field(default_factory=dict)
    hit_splits: list[HitSplit] = field(default_factory=list)
    twins: list[TwinDelta] = field(default_factory=list)  # A/A pairs: the Redis vs Valkey view
    reproduce: str | None = None  # the `kvbench run` that repeats this run

    def figure(self, name: str) -> Path | Skipped | None:
        """The figure file `name` (or why it was not drawn); None when it was never attempted."""
        for item in self.figures:
            if item.name == name:
                return item
        return None

    def figures_named(self, prefix: str) -> list[Path | Skipped]:
        return [item for item in self.figures if item.name.startswith(prefix)]
