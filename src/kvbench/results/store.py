"""RunStore: writes the run directory of results/layout.py while the run goes.

Crash-safety contract:
- manifest.json and cell.json are replaced atomically (layout.write_json_atomic) on every change;
- requests / server metrics / system metrics are appended as parquet part files
  (`<name>.parquet/part-NNNNN.parquet`), each written to a temp name and renamed, so a crash loses
  at most the rows buffered since the last flush (`batch_rows`) and never leaves a half file;
- `--resume`: cells whose status is ok are kept as they are; any other cell (running, failed,
  interrupted, pending) has its directory deleted and is redone from scratch, so rows are never
  duplicated.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kvbench.errors import UserError
from kvbench.results.cell import CellInfo
from kvbench.results.layout import (
    CELL_FILE,
    MANIFEST_FILE,
    REQUESTS_FILE,
    SERVER_METRICS_FILE,
    SYSTEM_METRICS_FILE,
    cell_dir,
    save_model,
)
from kvbench.results.manifest import CellRef, CellStatus, HostFacts, RunManifest
from kvbench.results.read import read_cell_info, read_manifest
from kvbench.results.records import (
    REQUEST_SCHEMA,
    SERVER_METRICS_SCHEMA,
    SYSTEM_METRICS_SCHEMA,
    RequestRecord,
)
from kvbench.results.summary import summarize


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class PartWriter:
    """Buffers rows of one schema and appends them as numbered part files under `<dir>`."""

    def __init__(self, directory: Path, schema: pa.Schema, batch_rows: int):
        self.directory = directory
        self.schema = schema
        self.batch_rows = batch_rows
        self.rows: list[dict] = []
        self.next_part = len(list(directory.glob("part-*.parquet"))) if directory.exists() else 0
        self.rows_written = 0

    def append(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.batch_rows:
            self.flush()

    def extend(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.append(row)

    def flush(self) -> None:
        if not self.rows:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        final = self.directory / f"part-{self.next_part:05d}.parquet"
        temp = self.directory / f".part-{self.next_part:05d}.parquet.tmp"
        pq.write_table(table, temp)
        os.replace(temp, final)
        self.next_part += 1
        self.rows_written += len(self.rows)
        self.rows = []


class CellWriter:
    """Everything one cell writes: its three parquet datasets and its cell.json.

    A producer of cells (the runner, an importer, a simulated target) adds every request record with
    `add_request` (all phases: prime / warmup / cooldown ones are kept and excluded from the
    numbers), then calls `summarize(measure_start_s, measure_end_s)` once the load has ended:
    that fills cell.json's measure window and its `CellSummary` (results/summary.py, the one place
    a cell's numbers are computed). `RunStore.end_cell` then flushes and saves."""

    def __init__(self, directory: Path, info: CellInfo, batch_rows: int = 256):
        self.directory = directory
        self.info = info
        self.records: list[RequestRecord] = []  # every record added, for the summary
        self.requests = PartWriter(directory / REQUESTS_FILE, REQUEST_SCHEMA, batch_rows)
        self.server_metrics = PartWriter(
            directory / SERVER_METRICS_FILE, SERVER_METRICS_SCHEMA, 4 * batch_rows
        )
        self.system_metrics = PartWriter(
            directory / SYSTEM_METRICS_FILE, SYSTEM_METRICS_SCHEMA, batch_rows
        )

    def add_request(self, record: RequestRecord) -> None:
        self.requests.append(record.to_row())
        self.records.append(record)

    def summarize(self, measure_start_s: float | None, measure_end_s: float | None) -> None:
        self.info.measure_start_s = measure_start_s
        self.info.measure_end_s = measure_end_s
        self.info.summary = summarize(self.records, measure_start_s, measure_end_s)

    def flush(self) -> None:
        for writer in (self.requests, self.server_metrics, self.system_metrics):
            writer.flush()

    def save(self) -> None:
        save_model(self.directory / CELL_FILE, self.info)


class RunStore:
    """The run directory. Create with `RunStore.create`, reopen for --resume with `RunStore.open`."""

    def __init__(self, run_dir: Path, manifest: RunManifest):
        self.run_dir = Path(run_dir)
        self.manifest = manifest

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, run_dir: Path, manifest: RunManifest) -> RunStore:
        run_dir = Path(run_dir)
        if (run_dir / MANIFEST_FILE).exists():
            raise UserError(
                f"--out: {run_dir} already holds a run; pass --resume to finish it or choose another directory"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        store = cls(run_dir, manifest)
        store.save_manifest()
        return store

    @classmethod
    def open(cls, run_dir: Path) -> RunStore:
        path = Path(run_dir) / MANIFEST_FILE
        if not path.is_file():
            raise UserError(f"--resume: {run_dir} holds no {MANIFEST_FILE}; nothing to resume")
        return cls(Path(run_dir), read_manifest(path, allow_migration=False))

    def save_manifest(self) -> None:
        save_model(self.run_dir / MANIFEST_FILE, self.manifest)

    def finish(self) -> None:
        self.manifest.finished_at = utc_now_iso()
        self.save_manifest()

    # ------------------------------------------------------------------ cells
    def cell_ref(self, cell_id: str) -> CellRef | None:
        return next((c for c in self.manifest.cells if c.cell_id == cell_id), None)

    def is_done(self, cell_id: str) -> bool:
        ref = self.cell_ref(cell_id)
        return ref is not None and ref.status == CellStatus.OK

    def read_cell(self, cell_id: str) -> CellInfo | None:
        path = cell_dir(self.run_dir, cell_id) / CELL_FILE
        return read_cell_info(path) if path.is_file() else None

    def register_cells(self, refs: list[CellRef]) -> None:
        """Add cells the manifest does not list yet (a resume with a wider --only adds, never drops)."""
        known = {c.cell_id for c in self.manifest.cells}
        self.manifest.cells.extend(ref for ref in refs if ref.cell_id not in known)
        self.save_manifest()

    def start_cell(self, info: CellInfo, batch_rows: int = 256) -> CellWriter:
        """Begin (or redo from scratch) a cell: partial data of an earlier attempt is deleted first."""
        if self.is_done(info.cell_id):
            raise RuntimeError(f"cell {info.cell_id} is already finished; it must not be rerun")
        directory = cell_dir(self.run_dir, info.cell_id)
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        info.status = CellStatus.RUNNING
        info.started_at = utc_now_iso()
        writer = CellWriter(directory, info, batch_rows)
        writer.save()
        self.set_status(info.cell_id, CellStatus.RUNNING)
        return writer

    def end_cell(self, writer: CellWriter, status: CellStatus, error: str | None = None) -> None:
        """Flush the data, then cell.json, then the manifest: a cell is ok only once its data is on disk."""
        writer.flush()
        writer.info.status = status
        writer.info.ended_at = utc_now_iso()
        if error is not None:
            writer.info.error = error
        writer.save()
        self.set_status(writer.info.cell_id, status)

    def set_status(self, cell_id: str, status: CellStatus) -> None:
        ref = self.cell_ref(cell_id)
        if ref is None:
            raise KeyError(cell_id)
        ref.status = status
        self.save_manifest()

    def record_failure(self, info: CellInfo, error: str, log_tail: str | None = None) -> None:
        """A cell that failed before it could start (e.g. the target did not come up)."""
        writer = self.start_cell(info)
        writer.info.log_tail = log_tail
        self.end_cell(writer, CellStatus.FAILED, error)


def manifest_versions(packages: list[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def host_facts() -> HostFacts:
    import platform

    import psutil

    return HostFacts(
        hostname=platform.node(),
        platform=platform.platform(),
        python=platform.python_version(),
        cpu_count_logical=psutil.cpu_count(logical=True),
        cpu_count_physical=psutil.cpu_count(logical=False),
        cpu_model=cpu_model_name(),
        memory_total_bytes=psutil.virtual_memory().total,
    )


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first "model name" of /proc/cpuinfo (None where the file or the field is missing)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip() or None
    return None
