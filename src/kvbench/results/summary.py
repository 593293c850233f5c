"""Per-cell tally of request records and the summary written to cell.json.

Only measure-phase requests count (warmup, cooldown and prime requests are recorded but excluded).
Rates divide by the measurement window (LevelResult.measure_start_s .. measure_end_s). TPOT is the
vLLM / inference-perf definition (e2e - ttft) / (output_tokens - 1), as the records carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvbench.results.records import Phase, RequestRecord, RequestStatus


@dataclass
class CellTally:
    statuses: dict[str, int] = field(default_factory=dict)
    ttft_ms: list[float] = field(default_factory=list)
    tpot_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    itl_ms: list[float] = field(default_factory=list)
    last_ok_end_s: float | None = None
    output_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cached_reported: int = 0
    other_phases: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None

    def observe(self, record: RequestRecord) -> None:
        if record.phase != Phase.MEASURE.value:
            self.other_phases[record.phase] = self.other_phases.get(record.phase, 0) + 1
            return
        self.statuses[record.status] = self.statuses.get(record.status, 0) + 1
        if record.status != RequestStatus.OK.value:
            self.first_error = self.first_error or (record.error or record.status)
            return
        _append_if(self.ttft_ms, record.ttft_ms)
        _append_if(self.tpot_ms, record.tpot_ms)
        _append_if(self.e2e_ms, record.e2e_ms)
        self.itl_ms.extend(record.itl_ms)
        if record.end_s is not None:
            self.last_ok_end_s = max(self.last_ok_end_s or record.end_s, record.end_s)
        self.output_tokens += record.output_tokens
        self.prompt_tokens += record.prompt_tokens
        if record.cached_tokens is not None:
            self.cached_tokens += record.cached_tokens
            self.cached_reported += 1

    @property
    def ok(self) -> int:
        return self.statuses.get(RequestStatus.OK.value, 0)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != RequestStatus.OK.value)

    def summary(self, measure_start_s: float | None, measure_end_s: float | None) -> dict[str, Any]:
        """A count-bound window ends when the last measured request is scheduled; it is extended to
        the end of the last successful measured request so rates are not inflated."""
        if measure_end_s is not None and self.last_ok_end_s is not None:
            measure_end_s = max(measure_end_s, self.last_ok_end_s)
        window_s = (
            (measure_end_s - measure_start_s)
            if measure_start_s is not None and measure_end_s is not None
            else None
        )
        rate = (lambda n: n / window_s) if window_s and window_s > 0 else (lambda n: None)
        summary: dict[str, Any] = {
            "requests_ok": self.ok,
            "requests_failed": self.failed,
            "requests_by_status": dict(self.statuses),
            "requests_other_phases": dict(self.other_phases),
            "measure_window_s": window_s,
            "request_rate_rps": rate(self.ok),
            "output_tokens_per_s": rate(self.output_tokens),
            "prompt_tokens_per_s": rate(self.prompt_tokens),
            "cached_prompt_fraction": (self.cached_tokens / self.prompt_tokens)
            if self.cached_reported and self.prompt_tokens
            else None,
            "tpot_definition": "(e2e - ttft) / (output_tokens - 1)",
        }
        for name, values in (
            ("ttft_ms", self.ttft_ms),
            ("tpot_ms", self.tpot_ms),
            ("e2e_ms", self.e2e_ms),
            ("itl_ms", self.itl_ms),
        ):
            summary.update(_percentiles(name, values))
        return summary


def _append_if(values: list[float], value: float | None) -> None:
    if value is not None:
        values.append(value)


def _percentiles(name: str, values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"{name}_mean": None, f"{name}_p50": None, f"{name}_p90": None, f"{name}_p99": None}
    array = np.asarray(values, dtype=float)
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return {
        f"{name}_mean": float(array.mean()),
        f"{name}_p50": float(p50),
        f"{name}_p90": float(p90),
        f"{name}_p99": float(p99),
    }
