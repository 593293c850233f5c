"""Read a run directory (results/layout.py contract) into plain in-memory values.

Contract: every cell listed in manifest.json (or found under cells/) becomes one `CellData`, whatever
its status; any of its files may be missing (a failed cell, an imported GuideLLM run without server
metrics) and then the matching frame is empty with the contract's columns. Nothing here computes
metrics: see metrics.py / server.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from kvbench.errors import UserError
from kvbench.results.cell import CellInfo
from kvbench.results.integrity import request_row_problems
from kvbench.results.layout import (
    CELL_FILE,
    CELLS_DIR,
    MANIFEST_FILE,
    REQUESTS_FILE,
    SERVER_METRICS_FILE,
    SYSTEM_METRICS_FILE,
)
from kvbench.results.manifest import CellStatus, RunManifest, ScenarioKind
from kvbench.results.read import read_cell_info, read_manifest
from kvbench.results.records import (
    REQUEST_SCHEMA,
    SERVER_METRICS_SCHEMA,
    SYSTEM_METRICS_SCHEMA,
    Phase,
    RequestRecord,
    records_from_frame,
)
from kvbench.results.summary import CellSummary, MeasureWindow, measure_window, summarize


@dataclass
class CellData:
    info: CellInfo
    requests: pd.DataFrame  # all phases; REQUEST_SCHEMA columns
    server: pd.DataFrame  # SERVER_METRICS_SCHEMA columns
    system: pd.DataFrame  # SYSTEM_METRICS_SCHEMA columns
    load_errors: list[str] = field(default_factory=list)  # unreadable files, said in the report

    @cached_property
    def records(self) -> list[RequestRecord]:
        """The requests as records (all phases), for results.summary."""
        return records_from_frame(self.requests)

    @cached_property
    def summary(self) -> CellSummary:
        """The cell's numbers, from its records and cell.json's window (results.summary)."""
        return summarize(self.records, self.info.measure_start_s, self.info.measure_end_s)

    @cached_property
    def window(self) -> MeasureWindow | None:
        measured = [r for r in self.records if r.phase == Phase.MEASURE.value]
        return measure_window(self.info.measure_start_s, self.info.measure_end_s, measured)

    @property
    def cell_id(self) -> str:
        return self.info.cell_id

    @property
    def ok(self) -> bool:
        return self.info.status == CellStatus.OK

    @property
    def model_short(self) -> str:
        return self.info.model.split("/")[-1]

    @property
    def base_scenario(self) -> str:
        return self.info.base_scenario


@dataclass
class RunData:
    run_dir: Path
    manifest: RunManifest
    cells: list[CellData]
    # base scenario -> what it is (see scenario_kinds); absent: unknown, neither offload nor routing
    kinds: dict[str, ScenarioKind] = field(default_factory=dict)

    def kind_of(self, base_scenario: str) -> ScenarioKind | None:
        return self.kinds.get(base_scenario)

    def offloads(self, base_scenario: str) -> bool:
        kind = self.kind_of(base_scenario)
        return kind is not None and kind.offloads

    def routes_precisely(self, base_scenario: str) -> bool:
        kind = self.kind_of(base_scenario)
        return kind is not None and kind.routes_precisely

    @property
    def baseline(self) -> str:
        return self.manifest.baseline_scenario or "no-offload"

    def models(self) -> list[str]:
        return sorted({c.info.model for c in self.cells})

    def scenarios(self) -> list[str]:
        """Scenario labels, baseline first, then in manifest order."""
        seen: list[str] = []
        for cell in self.cells:
            if cell.info.scenario not in seen:
                seen.append(cell.info.scenario)
        return sorted(seen, key=lambda s: (s != self.baseline, seen.index(s)))


def scenario_kinds(manifest: RunManifest, base_scenarios: set[str]) -> dict[str, ScenarioKind]:
    """What each scenario is: as the run recorded it (manifest.scenario_kinds, from the catalog the
    run used), else as the built-in catalog declares a scenario of that name (a GuideLLM import or
    a run written before kinds were recorded). A name in neither is of unknown kind."""
    from kvbench.spec.scenarios import load_catalog

    kinds = dict(manifest.scenario_kinds)
    missing = base_scenarios - kinds.keys()
    if missing:
        kinds.update(load_catalog().kinds(sorted(missing)))
    return kinds


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise UserError(f"{manifest_path}: no manifest.json: not a kvbench run directory")
    manifest = read_manifest(manifest_path)
    cells = [_load_cell(run_dir, info) for info in _cell_infos(run_dir, manifest)]
    kinds = scenario_kinds(manifest, {cell.base_scenario for cell in cells})
    return RunData(run_dir=run_dir, manifest=manifest, cells=cells, kinds=kinds)


def _cell_infos(run_dir: Path, manifest: RunManifest) -> list[CellInfo]:
    """cell.json where present (it is the fuller record), else the manifest's CellRef. A cell.json
    that exists but cannot be read (truncated, binary, not the schema) makes the cell failed, with
    the problem as its error: it is named in the report and no number is computed from it."""
    infos: dict[str, CellInfo] = {}
    for ref in manifest.cells:
        path = run_dir / CELLS_DIR / ref.cell_id / CELL_FILE
        info, problem = _read_cell_json(path)
        if info is None:
            info = CellInfo.from_ref(ref)
            if problem is not None:
                _mark_damaged(info, [f"{CELL_FILE}: {problem}"])
        infos[ref.cell_id] = info
    cells_root = run_dir / CELLS_DIR
    if cells_root.is_dir():
        for path in sorted(cells_root.glob(f"*/{CELL_FILE}")):
            if path.parent.name not in infos:
                info, _ = _read_cell_json(path)
                if info is not None:
                    infos[info.cell_id] = info
    return list(infos.values())


def _read_cell_json(path: Path) -> tuple[CellInfo | None, str | None]:
    """(cell.json, None), or (None, what is wrong with it); (None, None) when it is missing."""
    if not path.is_file():
        return None, None
    try:
        return read_cell_info(path), None
    except UserError as err:
        return None, str(err).removeprefix(f"{path}: ")


def _mark_damaged(info: CellInfo, problems: list[str]) -> None:
    """In memory only: the files on disk stay as they are (a --resume redoes the cell)."""
    info.status = CellStatus.FAILED
    info.error = "run files damaged: " + "; ".join(problems)


def _load_cell(run_dir: Path, info: CellInfo) -> CellData:
    cdir = run_dir / CELLS_DIR / info.cell_id
    errors: list[str] = []
    requests = _read_parquet(cdir / REQUESTS_FILE, REQUEST_SCHEMA.names, errors)
    server = _read_parquet(cdir / SERVER_METRICS_FILE, SERVER_METRICS_SCHEMA.names, errors)
    system = _read_parquet(cdir / SYSTEM_METRICS_FILE, SYSTEM_METRICS_SCHEMA.names, errors)
    if info.status == CellStatus.OK:
        requests_ok = info.summary.requests_ok if info.summary is not None else None
        problems = errors + (
            [] if errors else request_row_problems(requests, info.cell_id, requests_ok)
        )
        if problems:
            _mark_damaged(info, problems)
            errors = problems
    return CellData(info=info, requests=requests, server=server, system=system, load_errors=errors)


def _read_parquet(path: Path, columns: list[str], errors: list[str]) -> pd.DataFrame:
    """A single file or a directory of part files; missing columns are added as all-null."""
    if not path.exists():
        return pd.DataFrame({name: pd.Series(dtype="object") for name in columns})
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # a torn part file must not sink the whole report
        errors.append(
            f"{path.name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        )
        return pd.DataFrame({name: pd.Series(dtype="object") for name in columns})
    for name in columns:
        if name not in frame.columns:
            frame[name] = None
    return frame.reset_index(drop=True)


def measure_requests(cell: CellData) -> pd.DataFrame:
    """The requests that count in statistics: phase == measure (all requests if no phase was recorded)."""
    frame = cell.requests
    if frame.empty:
        return frame
    phase = frame["phase"]
    if phase.isna().all():
        return frame
    return frame[phase == "measure"].reset_index(drop=True)
