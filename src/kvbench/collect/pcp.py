"""Host metrics from Performance Co-Pilot (the seeds' collector), where `pmrep` is installed.

Contract: `start_pcp_sampler(interval_s, now_s)` returns None when `pmrep` is not on PATH; otherwise
a running `PcpSampler`: one `pmrep -t <interval> -o csv` process (stopped by pid in `stop()`) whose
CSV lines a reader thread turns into system_metrics rows (ts_s, source "pcp", metric = the column
name, e.g. `kernel.all.cpu.user` or `kernel.all.load-1 minute`, value). Rate metrics are converted
by pmrep itself; an empty or non-numeric cell is skipped. `take_rows()` drains what was read.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import threading
from collections.abc import Callable

DEFAULT_METRICS = (
    "kernel.all.cpu.user",
    "kernel.all.cpu.sys",
    "kernel.all.cpu.idle",
    "kernel.all.load",
    "mem.util.used",
    "mem.util.free",
    "disk.all.total_bytes",
    "network.all.in.bytes",
    "network.all.out.bytes",
)


def parse_csv_lines(header: list[str], line: list[str], ts_s: float) -> list[dict]:
    rows = []
    for name, cell in zip(header, line):
        if name == "Time":
            continue
        try:
            value = float(cell)
        except ValueError:
            continue
        rows.append({"ts_s": ts_s, "source": "pcp", "metric": name, "value": value})
    return rows


class PcpSampler:
    def __init__(
        self, pmrep: str, interval_s: float, now_s: Callable[[], float], metrics=DEFAULT_METRICS
    ):
        self.now_s = now_s
        self.process = subprocess.Popen(
            [pmrep, "-t", f"{interval_s:g}", "-o", "csv", "--ignore-unknown", *metrics],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="pcp-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None  # started with stdout=PIPE
        reader = csv.reader(self.process.stdout)
        header = next(reader, None)
        if header is None:
            return
        for line in reader:
            rows = parse_csv_lines(header, line, self.now_s())
            with self._lock:
                self._rows.extend(rows)

    def take_rows(self) -> list[dict]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._thread.join(timeout=timeout_s)


def start_pcp_sampler(interval_s: float, now_s: Callable[[], float]) -> PcpSampler | None:
    pmrep = shutil.which("pmrep")
    return PcpSampler(pmrep, interval_s, now_s) if pmrep else None
