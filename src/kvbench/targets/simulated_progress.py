"""The simulated run's progress: cells done, simulated seconds, simulated seconds per wall second,
and the last cell's output throughput in simulated time (its summary's output tok/s: tokens per
simulated second, never per wall second). A Rich bar on a terminal; one plain line per cell
otherwise (CI logs, pipes)."""

from __future__ import annotations

import sys
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kvbench.loadgen.progress import progress_enabled


class SimulatedRunProgress:
    def __init__(self, total_cells: int, *, enabled: bool | None = None) -> None:
        self.total_cells = total_cells
        self.done = 0
        self.simulated_s = 0.0
        self._started = time.perf_counter()
        self._enabled = progress_enabled(sys.stderr) if enabled is None else enabled
        self._progress: Progress | None = None
        self._task = None
        if self._enabled:
            self._progress = Progress(
                TextColumn("simulated cells"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[simulated]}"),
                TimeElapsedColumn(),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("cells", total=total_cells, simulated="")

    def cell_done(
        self,
        cell_id: str,
        simulated_s: float,
        wall_s: float,
        output_tok_s: float | None = None,
    ) -> None:
        self.done += 1
        self.simulated_s += simulated_s
        elapsed_s = time.perf_counter() - self._started
        rate = self.simulated_s / elapsed_s if elapsed_s > 0 else 0.0
        text = f"{self.simulated_s:,.0f} simulated s, {rate:,.1f} per wall s"
        if output_tok_s is not None:
            text += f"; last cell {output_tok_s:,.0f} output tok/s (simulated time)"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self.done, simulated=text)
        else:
            print(
                f"  {cell_id}: {simulated_s:.1f} simulated s in {wall_s:.1f} s "
                f"({self.done}/{self.total_cells} cells; {text})",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
