"""Progress display per cell (Rich) and the end-of-run summary table.

The progress bar is off when stdout is not a TTY or CI=true (plain logs stay clean). Summary rows
show a cell's CellSummary (results/summary.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from kvbench.loadgen.plan import ProgressUpdate
from kvbench.results.records import RequestRecord
from kvbench.results.summary import CellSummary, summarize


def progress_enabled(stream=None) -> bool:
    stream = stream or sys.stdout
    if os.environ.get("CI", "").lower() == "true":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class CellProgress:
    """`with CellProgress(cell_id, total) as bar: ... on_progress=bar.update`."""

    def __init__(
        self, cell_id: str, total_requests: int | None = None, *, enabled: bool | None = None
    ) -> None:
        self._cell_id = cell_id
        self._total = total_requests
        self._enabled = progress_enabled() if enabled is None else enabled
        self._progress: Progress | None = None
        self._task_id: TaskID | None = None

    def __enter__(self) -> CellProgress:
        if self._enabled:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("errors {task.fields[errors]}"),
                TextColumn("in flight {task.fields[in_flight]}"),
                TimeElapsedColumn(),
            )
            self._progress.start()
            self._task_id = self._progress.add_task(
                self._cell_id, total=self._total, errors=0, in_flight=0
            )
        return self

    def update(self, update: ProgressUpdate) -> None:
        if self._progress is not None and self._task_id is not None:
            self._progress.update(
                self._task_id,
                completed=update.done,
                errors=update.errors,
                in_flight=update.in_flight,
            )

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
    # What the cell ran, for the table's own columns (the cell id alone is truncated on a narrow
    # terminal, and then every row starts with the same model name). Unset: the cell id is shown.
    model: str | None = None
    scenario: str | None = None
    level: float | None = None
    repeat: int | None = None
    status: str = "ok"

    @classmethod
    def from_summary(cls, cell_id: str, summary: CellSummary, **cell: Any) -> SummaryRow:
        """A row of the cell's CellSummary (results/summary.py); `cell`: model, scenario, ..."""
        return cls(
            cell_id,
            summary.request_rate_rps or 0.0,
            summary.output_tokens_per_s or 0.0,
            summary.ttft_p50_ms,
            summary.ttft_p99_ms,
            summary.itl_p50_ms,
            summary.requests_failed,
            **cell,
        )


def summary_row(
    cell_id: str, records: Iterable[RequestRecord], measure_start_s: float, measure_end_s: float
) -> SummaryRow:
    return SummaryRow.from_summary(cell_id, summarize(records, measure_start_s, measure_end_s))


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _fmt_ms(value: float | None) -> str:
    """Milliseconds: one decimal below 100 ms, whole ms above (a 4-digit TTFT stays 4 characters)."""
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def render_summary_table(rows: Iterable[SummaryRow]) -> Table:
    """One row per cell: scenario and level (model / repeat only when they vary), then the numbers.

    Fits an 80-column terminal: no vertical rules, short headers, latencies in ms named once in the
    title; a long scenario or model label wraps inside its column instead of being cut."""
    rows = list(rows)
    described = bool(rows) and all(r.scenario is not None for r in rows)
    show_model = described and len({r.model for r in rows}) > 1
    show_repeat = described and len({r.repeat for r in rows}) > 1
    table = Table(
        title="kvbench load summary (measure phase; latencies in ms)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    if show_model:
        table.add_column("model", overflow="fold", min_width=8)
    table.add_column("scenario" if described else "cell", overflow="fold", min_width=14)
    if described:
        table.add_column("level" + (" rep" if show_repeat else ""), justify="right")
    for name in ("req/s", "tok/s", "TTFT\np50", "TTFT\np99", "ITL\np50", "err"):
        table.add_column(name, justify="right")
    for row in rows:
        note = "" if row.status == "ok" else f" ({row.status})"
        lead = [(row.model or "").split("/")[-1]] if show_model else []
        if described:
            lead += [
                (row.scenario or "") + note,
                f"{row.level:g}" + (f" r{row.repeat}" if show_repeat else ""),
            ]
        else:
            lead += [row.cell_id + note]
        table.add_row(
            *lead,
            _fmt(row.requests_per_s, 2),
            _fmt(row.output_tokens_per_s, 0),
            _fmt_ms(row.ttft_p50_ms),
            _fmt_ms(row.ttft_p99_ms),
            _fmt(row.itl_p50_ms, 2),
            str(row.errors),
        )
    return table
