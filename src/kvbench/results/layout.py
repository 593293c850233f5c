"""The run directory: paths and the JSON documents in it (DESIGN.md, "Run directory").

```
RUN/
  manifest.json                 RunManifest
  cells/<cell_id>/
    requests.parquet            records.REQUEST_SCHEMA, appended in batches (part files) as the cell runs
    server_metrics.parquet      records.SERVER_METRICS_SCHEMA
    system_metrics.parquet      records.SYSTEM_METRICS_SCHEMA
    cell.json                   CellInfo
  report/
```
Parquet "files" may be directories of part files (`requests.parquet/part-00000.parquet`, ...) so a
batch append never rewrites what is already on disk; `pandas.read_parquet(path)` reads both forms.
JSON is written crash-safely (temp file + rename).
"""

from __future__ import annotations

import enum
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"
CELLS_DIR = "cells"
REPORT_DIR = "report"
CELL_FILE = "cell.json"
REQUESTS_FILE = "requests.parquet"
SERVER_METRICS_FILE = "server_metrics.parquet"
SYSTEM_METRICS_FILE = "system_metrics.parquet"


class CellStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class SystemUnderTest(BaseModel):
    """What was measured. Every report states this in its first lines."""

    model_config = ConfigDict(extra="allow")
    kind: str  # emulated | vllm | k8s | endpoint | guidellm-import
    emulated: bool  # True: numbers come from the cost model, not from real hardware
    description: str  # one human line, e.g. "emulated vLLM 0.11 engines, H100-SXM profile, roofline cost model"
    details: dict[str, Any] = Field(default_factory=dict)


class CellRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    cell_id: str
    model: str
    scenario: str
    level: float
    repeat: int
    status: CellStatus = CellStatus.PENDING


class RunManifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    kvbench_version: str
    run_name: str
    created_at: str  # ISO 8601 UTC
    finished_at: str | None = None
    spec: dict[str, Any]  # the spec snapshot as loaded (JSON-able)
    system_under_test: SystemUnderTest
    host: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)  # tool + dependency versions
    strategy: str = (
        "concurrent"  # what `level` means: concurrent -> streams, constant/poisson -> req/s
    )
    baseline_scenario: str = "no-offload"
    cells: list[CellRef] = Field(default_factory=list)


class CellInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    cell_id: str
    model: str
    scenario: str
    scenario_params: dict[str, Any] = Field(default_factory=dict)
    level: float
    repeat: int
    strategy: str = "concurrent"
    status: CellStatus = CellStatus.PENDING
    started_at: str | None = None
    ended_at: str | None = None
    # Seconds from run start: the window whose requests count in statistics (warmup/cooldown excluded).
    measure_start_s: float | None = None
    measure_end_s: float | None = None
    error: str | None = None
    log_tail: str | None = None
    sources: dict[str, str] = Field(default_factory=dict)  # metrics source name -> scraped URL
    cache_protocol: dict[str, Any] = Field(
        default_factory=dict
    )  # reset done, primed, verify hit rate
    client: dict[str, Any] = Field(default_factory=dict)  # dispatch/event-loop lag, client CPU
    summary: dict[str, Any] = Field(default_factory=dict)  # req/s, output tok/s, TTFT p50/p99, ...
    validity: dict[str, Any] = Field(default_factory=dict)  # flags the runner already knows


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def format_level(level: float) -> str:
    return str(int(level)) if float(level).is_integer() else f"{level:g}"


def make_cell_id(model: str, scenario: str, level: float, repeat: int) -> str:
    """`<model>__<scenario>__<level>__r<repeat>`, filesystem-safe (`Qwen/Qwen3-8B` -> `Qwen3-8B`)."""
    model_part = _UNSAFE.sub("-", model.split("/")[-1])
    scenario_part = _UNSAFE.sub("-", scenario)
    return f"{model_part}__{scenario_part}__{format_level(level)}__r{repeat}"


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
