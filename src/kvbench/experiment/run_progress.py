"""The run's progress lines on the console: `[i/N]` before each cell, live rates while it runs, its
numbers and the ETA when it ends.

Live rates: the Rich bar (TTY) shows them continuously; without a TTY (CI, a log file) one line every
`HEARTBEAT_S` seconds of the cell. The numbers printed when a cell ends are the cell's own summary
(cell.json), the same values the end-of-run table shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console

from kvbench.experiment.cells import CellPlan
from kvbench.experiment.estimate import fmt_duration
from kvbench.loadgen.plan import ProgressUpdate
from kvbench.loadgen.progress import progress_enabled
from kvbench.results.layout import CellInfo

HEARTBEAT_S = 10.0


class RunProgress:
    def __init__(
        self,
        console: Console,
        total_cells: int,
        already_done: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console, self.total, self.clock = console, total_cells, clock
        self.position = already_done  # cells finished before this process (resume) count too
        self.finished_here = 0
        self.spent_s = 0.0  # wall time of the cells finished in this process
        self._cell_start = 0.0
        self._last_beat = 0.0
        self._live_lines = not progress_enabled()

    def eta_s(self) -> float | None:
        if self.finished_here == 0:
            return None
        return self.spent_s / self.finished_here * (self.total - self.position)

    def cell_started(self, plan: CellPlan, what: str) -> None:
        self.position += 1
        self._cell_start = self._last_beat = self.clock()
        self.console.print(
            f"[{self.position}/{self.total}] {plan.model.split('/')[-1]} / {plan.scenario} "
            f"@ {plan.level:g} r{plan.repeat}: {what}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def live(self, update: ProgressUpdate) -> None:
        now = self.clock()
        if not self._live_lines or now - self._last_beat < HEARTBEAT_S:
            return
        self._last_beat = now
        self.console.print(
            f"    {live_text(update)}", highlight=False, markup=False, soft_wrap=True
        )

    def cell_finished(self, info: CellInfo | None) -> None:
        self.finished_here += 1
        self.spent_s += self.clock() - self._cell_start
        eta = self.eta_s()
        left = self.total - self.position
        tail = (
            f"{left} cells left, ETA {fmt_duration(eta)}"
            if left and eta is not None
            else "last cell"
        )
        self.console.print(
            f"    {cell_result_text(info)}; {tail}", highlight=False, markup=False, soft_wrap=True
        )


def live_text(update: ProgressUpdate) -> str:
    rate = update.ok / update.elapsed_s if update.elapsed_s > 0 else 0.0
    tokens = (
        f", {update.output_tokens / update.elapsed_s:,.0f} tok/s"
        if update.output_tokens and update.elapsed_s > 0
        else ""
    )
    return (
        f"{update.elapsed_s:.0f} s: {update.done} done ({rate:.2f} req/s{tokens}), "
        f"{update.errors} errors, {update.in_flight} in flight"
    )


def cell_result_text(info: CellInfo | None) -> str:
    if info is None:
        return "no record"
    if info.status.value != "ok":
        return f"{info.status.value}: {info.error or 'no error recorded'}"
    s = info.summary
    if s is None:
        return "ok (no summary recorded)"
    ttft = "-" if s.ttft_p50_ms is None else f"{s.ttft_p50_ms:.1f} ms"
    return (
        f"ok: {s.request_rate_rps or 0:.2f} req/s, {s.output_tokens_per_s or 0:,.1f} output "
        f"tok/s, TTFT p50 {ttft}, {s.requests_failed} failed"
    )
