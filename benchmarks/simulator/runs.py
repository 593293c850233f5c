"""Shared by the simulator benchmarks: run a spec on a target kind, read its cells back."""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from kvbench.experiment.runner import run_experiment_cli

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
# cell.json summary keys (either dialect), in the order tried
METRIC_KEYS = {
    "prefix_hit_fraction": ("cached_prompt_fraction",),
    "output_tok_s": ("output_tokens_per_s",),
    "ttft_mean_ms": ("ttft_mean_ms", "ttft_ms_mean"),
    "tpot_p50_ms": ("tpot_p50_ms", "tpot_ms_p50"),
}


@dataclass
class RunTiming:
    run_dir: Path
    exit_code: int
    wall_s: float
    simulated_s: float  # sum over cells of the virtual time they ran (0 for live runs)
    cells: int
    peak_rss_mib: float


def run_spec(spec: str, out: Path, target: str, only: list[str] = ()) -> RunTiming:
    started = time.perf_counter()
    code = run_experiment_cli(Path(spec), out, only=list(only), target_kind=target)
    wall_s = time.perf_counter() - started
    (out / "wall.json").write_text(json.dumps({"wall_s": wall_s, "exit_code": code}) + "\n")
    cells = read_cells(out)
    simulated_s = sum((c.get("client") or {}).get("simulated_s") or 0.0 for c in cells.values())
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return RunTiming(out, code, wall_s, simulated_s, len(cells), max(own, children) / 1024)


def read_cells(run_dir: Path) -> dict[str, dict]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cells = {}
    for ref in manifest["cells"]:
        path = run_dir / "cells" / ref["cell_id"] / "cell.json"
        if path.is_file():
            cells[ref["cell_id"]] = json.loads(path.read_text())
    return cells


def step_lag_ms(cell_dir: Path) -> float | None:
    """The live engines' mean step lag over the cell (kvbench:engine_step_lag_seconds, every
    engine's sum / count delta over the cell's scrapes), in ms; None without those samples. An
    emulator that cannot keep its deadlines (a loaded box) shows here, and its numbers drift."""
    path = cell_dir / "server_metrics.parquet"  # a dataset directory (batch appends) or a file
    if not path.exists():
        return None
    import pandas as pd

    rows = pd.read_parquet(path, columns=["source", "metric", "value"])
    total = {}
    for suffix in ("sum", "count"):
        series = rows[rows.metric == f"kvbench:engine_step_lag_seconds_{suffix}"]
        spans = series.groupby("source").value.agg(["min", "max"])
        total[suffix] = float((spans["max"] - spans["min"]).sum())
    return 1000.0 * total["sum"] / total["count"] if total["count"] else None


def metric(summary: dict, name: str) -> float | None:
    for key in METRIC_KEYS[name]:
        if summary.get(key) is not None:
            return float(summary[key])
    return None


def save(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
