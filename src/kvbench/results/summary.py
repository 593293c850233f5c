"""`CellSummary`: a cell's numbers, computed in this one place from its records and measure window.

Every reader of a cell's throughput and latency (cell.json, the sweep's rate discovery, the
end-of-run table, analysis, the BR export) gets them from `summarize`, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kvbench.results.records import Phase, RequestRecord, RequestStatus

TPOT_DEFINITION = "(e2e - ttft) / (output_tokens - 1)"
PERCENTILES = (50, 90, 99)
LATENCIES = ("ttft", "tpot", "itl", "e2e")


@dataclass(frozen=True)
class MeasureWindow:
    """Seconds on the run clock: the span whose requests count in statistics."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def measure_window(
    measure_start_s: float | None, measure_end_s: float | None, measured: Sequence[RequestRecord]
) -> MeasureWindow | None:
    """THE window rule: the window the load generator recorded (cell.json measure_start_s ..
    measure_end_s) when it has both ends and a positive length; otherwise (an imported run without
    one) the first measured send to the last measured end. None when neither says how long it was.
    The recorded window is not stretched to the last request's end: requests still in flight when
    it closes count in full, as GuideLLM's and inference-perf's per-window rates do."""
    if (
        measure_start_s is not None
        and measure_end_s is not None
        and measure_end_s > measure_start_s
    ):
        return MeasureWindow(float(measure_start_s), float(measure_end_s))
    ends = [r.end_s for r in measured if r.end_s is not None and not math.isnan(r.end_s)]
    sends = [r.sent_s for r in measured if r.sent_s is not None and not math.isnan(r.sent_s)]
    if not ends or not sends or max(ends) <= min(sends):
        return None
    return MeasureWindow(float(min(sends)), float(max(ends)))


def token_arrivals_s(record: RequestRecord) -> np.ndarray:
    """Run-clock seconds at which each output token of `record` arrived: the first token at
    first_token_s (else sent_s + ttft), then one per inter-token gap (a chunk of k tokens is k gaps,
    the first k-1 of them 0). Without a full ITL list (an imported run), the tokens after the first
    are spread evenly up to end_s. Empty when the record has no token times."""
    n = int(record.output_tokens or 0)
    first = record.first_token_s
    if first is None and record.ttft_ms is not None:
        first = record.sent_s + record.ttft_ms / 1000.0
    if n <= 0 or first is None or math.isnan(first):
        return np.array([], dtype=float)
    gaps = record.itl_ms
    if len(gaps) == n - 1:
        return first + np.concatenate([[0.0], np.cumsum(np.asarray(gaps, dtype=float)) / 1000.0])
    end = record.end_s if record.end_s is not None and not math.isnan(record.end_s) else first
    return np.linspace(first, max(end, first), n) if n > 1 else np.array([first])


def tokens_in_window(
    records: Iterable[RequestRecord], window: MeasureWindow, n_slices: int = 1
) -> np.ndarray:
    """THE throughput rule: output tokens of successful requests (any phase) by the time they
    arrived, counted in `n_slices` equal slices of the window; tokens outside it do not count. A
    request that runs across an edge of the window contributes the tokens inside it, so requests
    that finish in lock-step waves cannot quantize the rate (counting whole requests at their end
    would jump by one wave at a time)."""
    counts = np.zeros(n_slices, dtype=float)
    width_s = window.duration_s / n_slices
    if width_s <= 0:
        return counts
    for record in records:
        if record.status != RequestStatus.OK.value:
            continue
        times = token_arrivals_s(record)
        inside = times[(times >= window.start_s) & (times <= window.end_s)]
        if len(inside):
            index = np.minimum(((inside - window.start_s) / width_s).astype(int), n_slices - 1)
            counts += np.bincount(index, minlength=n_slices)
    return counts


class CellSummary(BaseModel):
    """One cell's client-side numbers (measure phase only; prime / warmup / cooldown requests are
    counted in `requests_other_phases` and nothing else).

    - Rates over `measure_window_s` (see `measure_window` for the one window rule); None without
      a window. request_rate_rps and prompt_tokens_per_s: successful measured requests (and their
      prompt tokens) / window. output_tokens_per_s: output tokens that ARRIVED inside the window
      (`tokens_in_window`: by each token's arrival time, any phase) / window, so waves of
      requests finishing together cannot quantize it. `output_tokens` stays the measured
      requests' total.
    - Latencies over successful measured requests: TTFT = first token - sent; E2E = last token -
      sent; TPOT = the recorded value, else (e2e - ttft) / (output_tokens - 1) for >= 2 tokens;
      ITL = every inter-token gap, pooled. Percentiles: numpy's default (linear interpolation).
    - cached_prompt_fraction = cached tokens / prompt tokens over the successful requests whose
      server reported cached tokens; None when none did."""

    model_config = ConfigDict(extra="forbid")

    requests_ok: int = 0
    requests_failed: int = 0  # measured requests that did not end ok
    requests_by_status: dict[str, int] = Field(default_factory=dict)
    requests_other_phases: dict[str, int] = Field(default_factory=dict)
    first_error: str | None = None  # the first failed measured request's error
    measure_window_s: float | None = None
    request_rate_rps: float | None = None
    output_tokens_per_s: float | None = None
    prompt_tokens_per_s: float | None = None
    output_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_fraction: float | None = None
    ttft_mean_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p90_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_mean_ms: float | None = None
    tpot_p50_ms: float | None = None
    tpot_p90_ms: float | None = None
    tpot_p99_ms: float | None = None
    itl_mean_ms: float | None = None
    itl_p50_ms: float | None = None
    itl_p90_ms: float | None = None
    itl_p99_ms: float | None = None
    e2e_mean_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p90_ms: float | None = None
    e2e_p99_ms: float | None = None

    def latency_ms(self, name: str, stat: str) -> float | None:
        """`latency_ms("ttft", "p99")` -> ttft_p99_ms; stat is mean | p50 | p90 | p99."""
        value = getattr(self, f"{name}_{stat}_ms")
        return None if value is None else float(value)


def summarize(
    records: Iterable[RequestRecord], measure_start_s: float | None, measure_end_s: float | None
) -> CellSummary:
    """The one place a cell's numbers are computed (see CellSummary for the definitions)."""
    measured: list[RequestRecord] = []
    other_phases: dict[str, int] = {}
    all_records = list(records)
    for record in all_records:
        if record.phase == Phase.MEASURE.value:
            measured.append(record)
        else:
            other_phases[record.phase] = other_phases.get(record.phase, 0) + 1
    ok = [r for r in measured if r.status == RequestStatus.OK.value]
    by_status: dict[str, int] = {}
    for record in measured:
        by_status[record.status] = by_status.get(record.status, 0) + 1
    failed = [r for r in measured if r.status != RequestStatus.OK.value]
    window = measure_window(measure_start_s, measure_end_s, measured)
    window_s = window.duration_s if window is not None else None
    output_tokens = sum(r.output_tokens for r in ok)
    prompt_tokens = sum(r.prompt_tokens for r in ok)

    def rate(count: float) -> float | None:
        return count / window_s if window_s and measured else None

    fields: dict[str, float | None] = {}
    for name, values in latency_values_ms(ok).items():
        fields.update(_stats(name, values))
    return CellSummary(
        requests_ok=len(ok),
        requests_failed=len(failed),
        requests_by_status=by_status,
        requests_other_phases=other_phases,
        first_error=(failed[0].error or failed[0].status) if failed else None,
        measure_window_s=window_s,
        request_rate_rps=rate(len(ok)),
        output_tokens_per_s=(
            float(tokens_in_window(all_records, window).sum()) / window_s
            if window is not None and window_s and measured
            else None
        ),
        prompt_tokens_per_s=rate(prompt_tokens),
        output_tokens=output_tokens,
        prompt_tokens=prompt_tokens,
        cached_prompt_fraction=_cached_fraction(ok),
        **fields,
    )


def latency_values_ms(ok: Sequence[RequestRecord]) -> dict[str, np.ndarray]:
    """Per latency (ttft, tpot, itl, e2e): the values of the successful requests, in ms."""
    return {
        "ttft": _present([r.ttft_ms for r in ok]),
        "tpot": _present([tpot_ms(r) for r in ok]),
        "itl": np.asarray([gap for r in ok for gap in r.itl_ms], dtype=float),
        "e2e": _present([r.e2e_ms for r in ok]),
    }


def tpot_ms(record: RequestRecord) -> float | None:
    if record.tpot_ms is not None and not math.isnan(record.tpot_ms):
        return record.tpot_ms
    if record.e2e_ms is None or record.ttft_ms is None or record.output_tokens < 2:
        return None
    return (record.e2e_ms - record.ttft_ms) / (record.output_tokens - 1)


def _present(values: list[float | None]) -> np.ndarray:
    array = np.asarray([v for v in values if v is not None], dtype=float)
    return array[~np.isnan(array)]


def _stats(name: str, values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {f"{name}_mean_ms": None, **{f"{name}_p{q}_ms": None for q in PERCENTILES}}
    quantiles = np.percentile(values, PERCENTILES)
    stats: dict[str, float | None] = {f"{name}_mean_ms": float(values.mean())}
    stats.update({f"{name}_p{q}_ms": float(v) for q, v in zip(PERCENTILES, quantiles)})
    return stats


def _cached_fraction(ok: Sequence[RequestRecord]) -> float | None:
    reported = [r for r in ok if r.cached_tokens is not None]
    prompt = sum(r.prompt_tokens for r in reported)
    return sum(r.cached_tokens or 0 for r in reported) / prompt if reported and prompt > 0 else None
