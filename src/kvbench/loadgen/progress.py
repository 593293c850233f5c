"""Progress display per cell (Rich) and the end-of-run summary table.

The progress bar is off when stdout is not a TTY or CI=true (plain logs stay clean). Summary rows
come from a cell's measured records (phase == measure) over its measurement window.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kvbench.loadgen.plan import ProgressUpdate
from kvbench.results.records import Phase, RequestRecord, RequestStatus


def progress_enabled(stream=None) -> bool:
    stream = stream or sys.stdout
    if os.environ.get("CI", "").lower() == "true":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class CellProgress:
    """`with CellProgress(cell_id, total) as bar: ... on_progress=bar.update`."""

    def __init__(self, cell_id: str, total_requests: int | None = None, *, enabled: bool | None = None) -> None:
        self._cell_id = cell_id
        self._total = total_requests
        self._enabled = progress_enabled() if enabled is None else enabled
        self._progress: Progress | None = None
        self._task_id = None

    def __enter__(self) -> CellProgress:
        if self._enabled:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("errors {task.fields[errors]}"),
                                      TextColumn("in flight {task.fields[in_flight]}"), TimeElapsedColumn())
            self._progress.start()
            self._task_id = self._progress.add_task(self._cell_id, total=self._total, errors=0, in_flight=0)
        return self

    def update(self, update: ProgressUpdate) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, completed=update.done, errors=update.errors,
                                  in_flight=update.in_flight)

    def __exit__(self, *exc_info) -> None:
        if self._progress is not None:
            self._progress.stop()


@dataclass(frozen=True, slots=True)
class SummaryRow:
    cell_id: str
    requests_per_s: float
    output_tokens_per_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    itl_p50_ms: float | None
    errors: int


def summary_row(cell_id: str, records: Iterable[RequestRecord], measure_start_s: float,
                measure_end_s: float) -> SummaryRow:
    measured = [r for r in records if r.phase == Phase.MEASURE.value]
    ok = [r for r in measured if r.status == RequestStatus.OK.value]
    window_s = max(measure_end_s - measure_start_s, 1e-9)
    if ok:  # a count-bound window ends when the last measured request is scheduled: extend to its end
        window_s = max(window_s, max(r.end_s or 0.0 for r in ok) - measure_start_s)
    ttfts = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    itls = [gap for r in ok for gap in r.itl_ms]
    return SummaryRow(
        cell_id=cell_id, requests_per_s=len(ok) / window_s,
        output_tokens_per_s=sum(r.output_tokens for r in ok) / window_s,
        ttft_p50_ms=_pct(ttfts, 50), ttft_p99_ms=_pct(ttfts, 99), itl_p50_ms=_pct(itls, 50),
        errors=len(measured) - len(ok))


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_summary_table(rows: Iterable[SummaryRow]) -> Table:
    table = Table(title="kvbench load summary (measure phase)")
    for name in ("cell", "req/s", "output tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "errors"):
        table.add_column(name, justify="left" if name == "cell" else "right")
    for row in rows:
        table.add_row(row.cell_id, _fmt(row.requests_per_s, 2), _fmt(row.output_tokens_per_s, 0),
                      _fmt(row.ttft_p50_ms), _fmt(row.ttft_p99_ms), _fmt(row.itl_p50_ms, 2), str(row.errors))
    return table
