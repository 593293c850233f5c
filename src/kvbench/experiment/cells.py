"""Matrix expansion: models x scenarios (x scenario_params combinations) x levels x repeats.

Order: model-major, then scenario (and its parameter combination), then repeat, then level, so one
target.up() serves every level and repeat of a (model, scenario). A cell's identity is
results.manifest.CellIdentity: only the knobs the spec sweeps (more than one value) are part of it
and of the label `<scenario>+<k>=<v>,...`; a knob given one value is applied to every cell
(`scenario_params`) but names none.

Levels: concurrencies (concurrent), req/s (constant, poisson), 1 (synchronous). For `sweep` the
level is the sweep step k = 1..sweep_size: 1 runs synchronous, 2 throughput, k >= 3 a constant
rate that is only known once steps 1 and 2 have run (GuideLLM's sweep); cell.json holds the rate.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from kvbench.errors import UserError
from kvbench.results.manifest import CellIdentity, CellRef, format_level, scenario_label
from kvbench.spec.experiment import ExperimentSpec

ONLY_KEYS = ("model", "scenario", "level", "repeat")


@dataclass(frozen=True)
class ScenarioVariant:
    """One scenario with one combination of its knobs' values."""

    name: str  # the catalog scenario
    applied_params: dict[str, Any] = field(hash=False)  # every knob it uses, one value each
    swept_params: dict[str, Any] = field(hash=False)  # those the spec gives several values

    @property
    def label(self) -> str:
        return scenario_label(self.name, self.swept_params)


@dataclass(frozen=True)
class CellPlan:
    model: str
    variant: ScenarioVariant
    level: float
    repeat: int
    strategy: str  # what this cell runs: concurrent | constant | poisson | synchronous | throughput

    @property
    def identity(self) -> CellIdentity:
        return CellIdentity(
            model=self.model,
            base_scenario=self.variant.name,
            swept_params=self.variant.swept_params,
            level=self.level,
            repeat=self.repeat,
        )

    @property
    def cell_id(self) -> str:
        return self.identity.cell_id

    @property
    def scenario(self) -> str:
        """The label (tables, --only)."""
        return self.variant.label

    @property
    def scenario_name(self) -> str:
        return self.variant.name

    @property
    def scenario_params(self) -> dict[str, Any]:
        return self.variant.applied_params

    @property
    def group_key(self) -> tuple[str, str]:
        return self.model, self.scenario

    def at_level(self, level: float, strategy: str) -> CellPlan:
        return CellPlan(self.model, self.variant, level, self.repeat, strategy)

    def ref(self) -> CellRef:
        return CellRef.new(self.identity, self.strategy)


def scenario_variants(spec: ExperimentSpec) -> list[ScenarioVariant]:
    """Every scenario x combination of the knobs it uses.

    A knob a scenario does not use (num_cpu_blocks for no-offload) is not swept for it: its cells
    would be identical. For an existing endpoint, scenarios are labels only and every knob applies."""
    used = _param_users(spec)
    variants = []
    for name in spec.scenarios:
        keys = sorted(k for k in spec.scenario_params if used is None or k in used(name))
        swept = {k for k in keys if len(spec.scenario_params[k]) > 1}
        for values in itertools.product(*(spec.scenario_params[k] for k in keys)):
            applied = dict(zip(keys, values))
            variants.append(
                ScenarioVariant(name, applied, {k: v for k, v in applied.items() if k in swept})
            )
    return variants


def _param_users(spec: ExperimentSpec):
    if spec.target.kind == "endpoint" or not spec.scenario_params:
        return None
    from kvbench.spec.scenarios import catalog_for_spec, params_used_by

    catalog = catalog_for_spec(spec)
    return lambda name: params_used_by(catalog, name)


def level_strategies(spec: ExperimentSpec) -> list[tuple[float, str]]:
    load = spec.load
    if load.strategy == "sweep":
        return [(float(k), _sweep_step_strategy(k)) for k in range(1, load.sweep_size + 1)]
    if load.strategy == "synchronous":
        return [(1.0, "synchronous")]
    return [(float(level), load.strategy) for level in load.levels]


def _sweep_step_strategy(step: int) -> str:
    return {1: "synchronous", 2: "throughput"}.get(step, "constant")


def expand_cells(spec: ExperimentSpec, only: list[str] | tuple[str, ...] = ()) -> list[CellPlan]:
    filters = parse_only(only)
    plans = [
        CellPlan(model, variant, level, repeat, strategy)
        for model in spec.models
        for variant in scenario_variants(spec)
        for repeat in range(spec.repeats)
        for level, strategy in level_strategies(spec)
    ]
    kept = [p for p in plans if _matches(p, filters)]
    if not kept:
        shown = " ".join(f"{k}={v}" for k, values in filters.items() for v in values)
        raise UserError(f"--only {shown}: matches no cell of the experiment")
    return kept


def parse_only(only) -> dict[str, set[str]]:
    """`--only KEY=VALUE` (repeatable; several values of one key are OR-ed, keys AND-ed)."""
    filters: dict[str, set[str]] = {}
    for item in only:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise UserError(
                f"--only {item!r}: expected KEY=VALUE with KEY one of {', '.join(ONLY_KEYS)}"
            )
        if key not in ONLY_KEYS:
            raise UserError(
                f"--only {item!r}: unknown key {key!r}; use one of {', '.join(ONLY_KEYS)}"
            )
        value = value.strip()
        if key == "level":
            try:
                value = format_level(float(value))
            except ValueError:
                raise UserError(f"--only {item!r}: level must be a number") from None
        filters.setdefault(key, set()).add(value)
    return filters


def _matches(plan: CellPlan, filters: dict[str, set[str]]) -> bool:
    values = {
        "model": {plan.model, plan.model.split("/")[-1]},
        "scenario": {plan.scenario, plan.scenario_name},
        "level": {format_level(plan.level)},
        "repeat": {str(plan.repeat)},
    }
    return all(values[key] & wanted for key, wanted in filters.items())
