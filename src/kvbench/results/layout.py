"""The run directory: paths and the JSON documents in it.

```
RUN/
  manifest.json                 manifest.RunManifest
  cells/<cell_id>/
    requests.parquet            records.REQUEST_SCHEMA, appended in batches (part files) as the cell runs
    server_metrics.parquet      records.SERVER_METRICS_SCHEMA
    system_metrics.parquet      records.SYSTEM_METRICS_SCHEMA
    cell.json                   cell.CellInfo
  report/
```
Parquet "files" may be directories of part files (`requests.parquet/part-00000.parquet`, ...) so a
batch append never rewrites what is already on disk; `pandas.read_parquet(path)` reads both forms.
JSON is written crash-safely (temp file + rename) and read through results/read.py (schema
version check, migration of the previous version).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import BaseModel

from kvbench.results.cell import CellInfo
from kvbench.results.manifest import (
    CellIdentity,
    CellRef,
    CellStatus,
    RunManifest,
    SystemUnderTest,
    format_level,
    make_cell_id,
    scenario_label,
)

MANIFEST_FILE = "manifest.json"
CELLS_DIR = "cells"
REPORT_DIR = "report"
CELL_FILE = "cell.json"
REQUESTS_FILE = "requests.parquet"
SERVER_METRICS_FILE = "server_metrics.parquet"
SYSTEM_METRICS_FILE = "system_metrics.parquet"


def cell_dir(run_dir: Path, cell_id: str) -> Path:
    return Path(run_dir) / CELLS_DIR / cell_id


def write_json_atomic(path: Path, text: str) -> None:
    """Temp file in the same directory + fsync + rename: readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def save_model(path: Path, model: BaseModel) -> None:
    write_json_atomic(path, model.model_dump_json(indent=2))


__all__ = [
    "CellIdentity",
    "CellInfo",
    "CellRef",
    "CellStatus",
    "RunManifest",
    "SystemUnderTest",
    "format_level",
    "make_cell_id",
    "scenario_label",
]
