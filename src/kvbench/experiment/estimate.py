"""How long a run will take, before it starts (`--dry-run`) and while it goes (the ETA).

Before the run: per cell the level's duration (warm-up and cool-down are inside it) plus the
cache-state protocol (reset, prime, verify), per (model, scenario) group one deployment start-up,
by target kind. A count-bound level (`requests_per_level` without `duration_s`) has no duration to
add: the estimate says so instead of guessing. The simulated target runs in virtual time: its wall
time is far below these numbers, which are what the same cells take live.
During the run: the mean wall time of the cells finished so far times the cells left.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvbench.experiment.cells import CellPlan
from kvbench.spec.experiment import ExperimentSpec

# Start-up of one deployment, seconds (engines + router + stores up and healthy).
STARTUP_S = {"emulated": 5.0, "simulated": 1.0, "vllm": 120.0, "k8s": 300.0, "endpoint": 0.0}
CACHE_PROTOCOL_S = 3.0  # reset + prime + verify per cell, when the spec asks for them


@dataclass(frozen=True)
class Estimate:
    cells: int
    groups: int  # deployments started: one per (model, scenario)
    cell_s: float | None  # None: count-bound levels, no duration known
    startup_s: float

    @property
    def total_s(self) -> float | None:
        if self.cell_s is None:
            return None
        return self.cells * self.cell_s + self.groups * self.startup_s

    def text(self) -> str:
        if self.total_s is None:
            return (
                f"{self.cells} cells; duration unknown: levels stop after requests_per_level "
                f"requests, not after a time (plus {self.groups} deployment start-ups of "
                f"~{fmt_duration(self.startup_s)})"
            )
        return (
            f"~{fmt_duration(self.total_s)}: {self.cells} cells x ~{fmt_duration(self.cell_s or 0)} "
            f"+ {self.groups} deployment start-ups x ~{fmt_duration(self.startup_s)}"
        )


def estimate_run(spec: ExperimentSpec, plans: list[CellPlan]) -> Estimate:
    load = spec.load
    protocol_s = CACHE_PROTOCOL_S if (spec.cache.reset or spec.cache.prime) else 0.0
    cell_s = None if load.duration_s is None else load.duration_s + protocol_s
    groups = len({p.group_key for p in plans})
    return Estimate(len(plans), groups, cell_s, STARTUP_S.get(spec.target.kind, 60.0))


def fmt_duration(seconds: float) -> str:
    """'45 s', '3 min 20 s', '7 h 32 min'."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
