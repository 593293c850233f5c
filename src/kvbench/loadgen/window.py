"""A level's time/count window: which phase a request scheduled now belongs to, and when to stop.

Contract (all times perf_counter seconds):
- [start, start + warmup_s): warmup.
- measure: from start + warmup_s until the measure end, which comes at
  start + duration_s - cooldown_s (duration levels) or when the max_requests-th measured request
  is scheduled (count levels), whichever is first.
- cooldown: cooldown_s after the measure end (load stays on while the measured tail finishes).
  For duration levels that ends exactly at start + duration_s.
- A level with neither duration nor max_requests runs one pass over its conversations: measure
  never ends by itself (the source running dry stops it).
"""

from __future__ import annotations

from kvbench.errors import UserError
from kvbench.results.records import Phase


class LevelWindow:
    def __init__(
        self,
        *,
        start_perf: float,
        duration_s: float | None,
        max_requests: int | None,
        warmup_s: float,
        cooldown_s: float,
    ) -> None:
        if duration_s is not None and warmup_s + cooldown_s >= duration_s:
            raise UserError(
                f"level warmup_s + cooldown_s ({warmup_s:g} + {cooldown_s:g}) must be "
                f"shorter than duration_s ({duration_s:g})"
            )
        if max_requests is not None and max_requests < 1:
            raise UserError(f"level max_requests must be >= 1, got {max_requests}")
        self.start_perf = start_perf
        self.measure_start_perf = start_perf + warmup_s
        self._planned_measure_end = (
            start_perf + duration_s - cooldown_s if duration_s is not None else None
        )
        self._max_requests = max_requests
        self._cooldown_s = cooldown_s
        self.measure_end_perf: float | None = None
        self.measured_scheduled = 0

    def phase_at(self, now_perf: float) -> Phase | None:
        """The phase of a request scheduled at `now_perf`, or None when the level sends no more."""
        if (
            self.measure_end_perf is None
            and self._planned_measure_end is not None
            and now_perf >= self._planned_measure_end
        ):
            self.measure_end_perf = self._planned_measure_end
        if self.measure_end_perf is not None:
            if now_perf < self.measure_end_perf + self._cooldown_s:
                return Phase.COOLDOWN
            return None
        return Phase.WARMUP if now_perf < self.measure_start_perf else Phase.MEASURE

    def count(self, phase: Phase, now_perf: float) -> None:
        """Account one request admitted in `phase` (call right after `phase_at`, same `now_perf`)."""
        if phase is not Phase.MEASURE:
            return
        self.measured_scheduled += 1
        if self._max_requests is not None and self.measured_scheduled >= self._max_requests:
            self.measure_end_perf = now_perf

    @property
    def cycles(self) -> bool:
        """Whether conversations are reused under fresh ids when the list runs out."""
        return self._planned_measure_end is not None or self._max_requests is not None
