"""A/A twin check: do configurations that should perform the same come out the same?

Twin scenarios differ only in a component that should not matter for performance: their declared
kinds (the scenario catalog's `kind` + `kv_store`) are equal except that the KV store behind the
router's block index is Redis in one and Valkey in the other (both speak the same protocol, and the
router talks to either through the same client). LMCache's remote tier is not a twin pair: its
redis:// and valkey:// connectors are different clients (the valkey one pipelines batches over a
pool of worker threads; on real vLLM 0.26 with LMCache 0.5.6 the Valkey cell ran 42 % faster than
the Redis one, benchmarks/results/gpu-h200/). Its Redis / Valkey pairs still get the same deltas
(the report's Redis vs Valkey view) but take no part in the A/A check. Cells pair when their
scenarios are a store pair with the same swept params (`llm-d-redis+x=1` with `llm-d-valkey+x=1`).

Each twin pair is compared with exactly the method used for the baseline deltas (`compare_peaks`
for peak throughput, `compare_latency` for TTFT mean and p50 at the highest level both ran), so a
significant twin difference says those intervals are too narrow for this run: they do not cover
the variation between runs of the same configuration. Then the check FLAGs the model and
`downgrade` marks every delta of that model, so each significant verdict reads 'indicative ...'.
Twins that agree are evidence (not proof) that the intervals are not over-confident.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from kvbench.analysis.check_names import AA_TWINS_AGREE
from kvbench.analysis.latency import (
    STAT_BY_KEY,
    LatencyComparison,
    common_level,
    compare_latency,
    ok_cells_by_key,
)
from kvbench.analysis.load import RunData
from kvbench.analysis.peaks import Peak, compare_peaks
from kvbench.analysis.stats import Delta
from kvbench.analysis.validity import Check, CheckStatus
from kvbench.results.manifest import ScenarioKind

TWIN_STATS = ("ttft_mean", "ttft_p50")
CHECK_NAME = AA_TWINS_AGREE
THROUGHPUT_METRIC = "peak output throughput"


@dataclass(frozen=True)
class TwinDelta:
    model: str
    first: str  # scenario label (the reference side)
    second: str  # its twin; delta = second relative to first
    metric: str  # THROUGHPUT_METRIC or a latency label ("TTFT mean")
    level: float  # the level compared (each side's peak for throughput: the first side's)
    delta: Delta
    aa_twin: bool = True  # False: a Redis / Valkey pair whose clients differ (no A/A evidence)

    def text(self) -> str:
        return f"{self.second} vs {self.first} {self.metric} {self.delta.text()}"


# Store roles whose client is the same code for Redis and Valkey (see the module docstring).
TWIN_STORE_ROLES = ("kv-block-index",)


def are_store_pair(first: ScenarioKind, second: ScenarioKind) -> bool:
    """Redis (first) and Valkey (second) in the same role, everything else equal."""
    same = first.model_copy(update={"store": None}) == second.model_copy(update={"store": None})
    return same and first.store == "redis" and second.store == "valkey"


def are_twins(first: ScenarioKind, second: ScenarioKind) -> bool:
    """A store pair in a role whose client does not depend on the store (TWIN_STORE_ROLES)."""
    return are_store_pair(first, second) and first.store_role in TWIN_STORE_ROLES


def store_pairs(kinds: dict[str, ScenarioKind]) -> list[tuple[str, str]]:
    """(redis scenario, valkey scenario) for every store pair among `kinds`, in their order."""
    return [(a, b) for a, ka in kinds.items() for b, kb in kinds.items() if are_store_pair(ka, kb)]


def twin_pairs(kinds: dict[str, ScenarioKind]) -> list[tuple[str, str]]:
    """The store pairs that are A/A twins (see `are_twins`)."""
    return [(a, b) for a, b in store_pairs(kinds) if are_twins(kinds[a], kinds[b])]


def builtin_twin_pairs() -> list[tuple[str, str]]:
    """The twin pairs of the built-in scenario catalog (what the report's methodology names)."""
    from kvbench.spec.scenarios import load_catalog

    catalog = load_catalog()
    return twin_pairs(catalog.kinds(catalog.names()))


def twin_peaks(peaks: list[Peak], kinds: dict[str, ScenarioKind]) -> list[tuple[Peak, Peak]]:
    """(first, second) peaks of the same model whose scenarios are a store pair (see
    `are_store_pair`) with the same swept params."""

    def params(peak: Peak) -> dict:
        return peak.cells[0].info.swept_params if peak.cells else {}

    pairs = store_pairs(kinds)
    out = []
    for peak in peaks:
        for first, second in pairs:
            if peak.base_scenario != first:
                continue
            twin = next(
                (
                    p
                    for p in peaks
                    if p.model == peak.model
                    and p.base_scenario == second
                    and params(p) == params(peak)
                ),
                None,
            )
            if twin is not None:
                out.append((peak, twin))
    return out


def twin_deltas(
    run: RunData,
    peaks: list[Peak],
    rng: np.random.Generator,
) -> list[TwinDelta]:
    cells = ok_cells_by_key(run)
    out = []
    for first, second in twin_peaks(peaks, run.kinds):
        aa = are_twins(run.kinds[first.base_scenario], run.kinds[second.base_scenario])
        out.append(
            TwinDelta(
                first.model,
                first.scenario,
                second.scenario,
                THROUGHPUT_METRIC,
                first.level,
                compare_peaks(first, second, rng),
                aa,
            )
        )
        level = common_level(cells, first.model, [first.scenario, second.scenario])
        if level is None:
            continue
        for key in TWIN_STATS:
            stat = STAT_BY_KEY[key]
            delta = compare_latency(
                cells[(first.model, first.scenario, level)],
                cells[(first.model, second.scenario, level)],
                stat,
                rng,
            )
            out.append(
                TwinDelta(
                    first.model,
                    first.scenario,
                    second.scenario,
                    f"{stat.label} at level {level:g}",
                    level,
                    delta,
                    aa,
                )
            )
    return out


def twin_checks(run: RunData, twins: list[TwinDelta]) -> list[Check]:
    """One check per model with twins (FLAG / OK); one SKIP for the run when no model has any."""
    checks = []
    for model in run.models():
        mine = [t for t in twins if t.model == model and t.aa_twin]
        if not mine:
            continue
        differing = [t for t in mine if t.delta.significant]
        if differing:
            detail = "; ".join(f"{t.text()} ({t.delta.evidence})" for t in differing)
            evidence = (
                f"equivalent configurations differ significantly ({detail}): intervals understate "
                "run-to-run variance; treat single-run verdicts as indicative (every significant verdict "
                f"for {model.split('/')[-1]} is downgraded to 'indicative' and recommends nothing)"
            )
            checks.append(Check(CHECK_NAME, CheckStatus.FLAG, model, evidence))
        else:
            detail = "; ".join(t.text() for t in mine)
            checks.append(
                Check(
                    CHECK_NAME,
                    CheckStatus.OK,
                    model,
                    f"equivalent configurations agree (no twin difference is significant: {detail}): "
                    "evidence that the intervals are not over-confident",
                )
            )
    if not checks:
        names = ", ".join(f"{a}/{b}" for a, b in builtin_twin_pairs())
        checks.append(
            Check(
                CHECK_NAME,
                CheckStatus.SKIP,
                "run",
                f"no twin scenarios in this run (A/A pairs: {names}): the intervals' calibration is not checked",
            )
        )
    return checks


def failed_models(checks: list[Check]) -> set[str]:
    return {c.subject for c in checks if c.name == CHECK_NAME and c.status == CheckStatus.FLAG}


def downgrade(
    peaks: list[Peak], latency: list[LatencyComparison], models: set[str]
) -> list[LatencyComparison]:
    """Mark every delta of `models` as downgraded (peaks in place; returns the new latency list)."""
    for peak in peaks:
        if peak.model in models:
            peak.delta = dataclasses.replace(peak.delta, downgraded=True)
    return [
        dataclasses.replace(c, delta=dataclasses.replace(c.delta, downgraded=True))
        if c.model in models
        else c
        for c in latency
    ]
