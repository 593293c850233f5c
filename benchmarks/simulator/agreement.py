"""Agreement of the simulated target with the real-time emulated target (same code, same spec and
seed), per cell (one cell = one scenario at one level): prefix-hit fraction within 2 points, output
tok/s within 5 %, TTFT mean within 10 %, TPOT p50 within 5 %. Prints a table, wall times and
simulated seconds per wall second, and writes benchmarks/results/simulator_agreement.json (merged
per experiment, so experiments can be run one at a time).

    .venv/bin/python benchmarks/simulator/agreement.py [NAME ...] [--spec FILE] [--work DIR]
        [--live-runs N] [--reuse-live]

Default: a small subset (SUBSETS: one model, one or two low levels, a short window, every scenario)
of EVERY bundled experiment; NAME picks some of them. `--spec FILE` compares one spec file as it is
(e.g. agreement-small.yaml). The live half runs in real time: run it on a quiet machine (a loaded
one shows as emulator step lag, reported per cell, and the live numbers drift).

The reference is the live mean over LIVE_RUNS[name] runs of the same spec and seed (A/A: the live
stack is not deterministic, and with eviction and load-aware routing one live run differs from
the next by more than the bounds). Each metric row carries the live runs' values and their spread
(max - min, in the bound's units): the noise floor. A cell is within bounds when every metric's
error to the live mean is; it is within noise when every metric's error is within its bound or
within the live spread (the simulated run is one trajectory, as one live run is).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from runs import RESULTS_DIR, RunTiming, metric, read_cells, run_spec, save, step_lag_ms

from kvbench.spec.scenarios import experiment_names, resolve_experiment

LIMITS = {  # metric -> (kind, bound): "abs" = absolute difference, "rel" = relative to live
    "prefix_hit_fraction": ("abs", 0.02),
    "output_tok_s": ("rel", 0.05),
    "ttft_mean_ms": ("rel", 0.10),
    "tpot_p50_ms": ("rel", 0.05),
}

# Per bundled experiment: top-level spec keys replaced (dicts merged one level deep). Every
# scenario stays; models, levels and windows shrink so the live half takes minutes.
SUBSETS: dict[str, dict[str, Any]] = {
    "quickstart": {"repeats": 1, "load": {"levels": [6]}},
    "quickstart-live": {},
    "llm-d-kvcache-eval": {
        "models": ["Qwen/Qwen3-0.6B"],
        "load": {"levels": [1, 50], "duration_s": 20, "warmup_s": 2},
        "collect": {"interval_s": 2},
    },
    "llm-d-kvcache-eval-20k-cpu-blocks": {  # 14B at 50 streams finishes nothing within 20 s
        "models": ["Qwen/Qwen3-14B"],
        "load": {"levels": [8], "duration_s": 40, "warmup_s": 5},
        "collect": {"interval_s": 2},
    },
    "llm-d-tiered-prefix-cache-high": {"load": {"levels": [15], "requests_per_level": 45}},
    "llm-d-tiered-prefix-cache-low": {"load": {"levels": [15], "requests_per_level": 45}},
    "vllm-cpu-offload-eval": {
        "models": ["Qwen/Qwen3-0.6B"],
        "load": {"sweep_size": 3, "duration_s": 10, "max_concurrency": 32},
    },
}


# A live cell whose engines' mean step lag passed this is not a reference: the real-time stack fell
# behind its own deadlines (a loaded box); on a quiet one this box shows 1.5-2 ms.
OVERLOADED_LAG_MS = 20.0
# Live runs (A/A, same spec and seed) the reference is the mean of: 3 where the live half is cheap
# (a couple of minutes a run), 1 for the rest (minutes per run; their cells also vary less).
LIVE_RUNS = {"quickstart": 3, "quickstart-live": 3, "vllm-cpu-offload-eval": 3}
# Cases whose subset renders the same cells with the same seed as another's: they share its live
# runs (quickstart-live is the quickstart's level 6 on the emulated target, as the subset runs it).
SHARED_LIVE = {"quickstart-live": "quickstart"}


@dataclass
class LiveCell:
    """One cell over the live runs: each metric's per-run values, and the engines' step lag."""

    ok: bool
    statuses: list[str]
    values: dict[str, list[float]] = field(default_factory=dict)
    step_lag_ms: list[float] = field(default_factory=list)


def live_reference(run_dirs: list[Path]) -> dict[str, LiveCell]:
    """Per cell id (of the first run): its metrics in every live run (a cell missing from a run,
    or not ok in one, makes the reference not ok)."""
    runs = [read_cells(run_dir) for run_dir in run_dirs]
    reference = {}
    for cell_id in runs[0]:
        cells = [run.get(cell_id) for run in runs]
        statuses = [c["status"] if c else "missing" for c in cells]
        ref = LiveCell(ok=all(status == "ok" for status in statuses), statuses=statuses)
        for name in LIMITS:
            values = [metric(c["summary"], name) for c in cells if c]
            if ref.ok and all(v is not None for v in values):
                ref.values[name] = [float(v) for v in values if v is not None]
        for run_dir in run_dirs:
            lag = step_lag_ms(run_dir / "cells" / cell_id)
            if lag is not None:
                ref.step_lag_ms.append(lag)
        reference[cell_id] = ref
    return reference


def spread(kind: str, values: list[float]) -> float:
    """The live runs' spread in the bound's units: max - min (abs), or that over the mean (rel)."""
    width = max(values) - min(values)
    if kind == "abs":
        return width
    mean = statistics.fmean(values)
    return width / mean if mean else float("inf")


def subset_spec(name: str, work: Path) -> Path:
    """The bundled experiment with its SUBSETS overrides, as a spec file under `work`."""
    source = resolve_experiment(name)
    spec = yaml.safe_load(source.read_text())
    for key, value in SUBSETS[name].items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    spec["scenario_files"] = [
        str((source.parent / f).resolve()) for f in spec.get("scenario_files", [])
    ]
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def compare(live: dict[str, LiveCell], simulated: dict) -> dict[str, dict]:
    rows = {}
    for cell_id, ref in live.items():
        sim_cell = simulated.get(cell_id)
        if sim_cell is None or not ref.ok or sim_cell["status"] != "ok":
            rows[cell_id] = {
                "status": {
                    "live": ref.statuses,
                    "simulated": sim_cell["status"] if sim_cell else None,
                    "ok": False,
                }
            }
            continue
        row: dict[str, Any] = {}
        for name, values in ref.values.items():
            b = metric(sim_cell["summary"], name)
            if b is not None:
                row[name] = compare_metric(name, values, b)
        row["live_step_lag_ms"] = ref.step_lag_ms
        row["live_overloaded"] = max(ref.step_lag_ms, default=0.0) > OVERLOADED_LAG_MS
        # the prefix-hit fraction's resolution: one request's share of the cell's prompt tokens
        # (on average); a bound below it is one request routed or evicted the other way
        ok_requests = sim_cell["summary"].get("requests_ok") or 0
        row["one_request_share"] = 1.0 / ok_requests if ok_requests else None
        rows[cell_id] = row
    return rows


def compare_metric(name: str, live_values: list[float], simulated: float) -> dict[str, Any]:
    """One metric of one cell: the simulated value against the live mean (LIMITS[name])."""
    kind, bound = LIMITS[name]
    a = statistics.fmean(live_values)
    error = simulated - a if kind == "abs" else (simulated - a) / a if a else float("inf")
    noise = spread(kind, live_values) if len(live_values) > 1 else 0.0
    return {
        "live": a,
        "live_runs": live_values,
        "live_spread": noise,
        "simulated": simulated,
        "error": error,
        "ok": abs(error) <= bound,
        "within_noise": abs(error) <= max(bound, noise),
    }


def metric_rows(row: dict) -> list[dict]:
    return [row[name] for name in LIMITS if name in row]


def cell_ok(row: dict, key: str) -> bool:
    """Every metric of the row passes `key` ("ok": the bound, "within_noise": bound or spread)."""
    return "status" not in row and all(r[key] for r in metric_rows(row))


def reused_run(run_dir: Path) -> RunTiming:
    """An earlier live run, with the wall time recorded next to it."""
    wall = (
        json.loads((run_dir / "wall.json").read_text()) if (run_dir / "wall.json").is_file() else {}
    )
    return RunTiming(
        run_dir, 0, wall.get("wall_s", float("nan")), 0.0, len(read_cells(run_dir)), 0.0
    )


def print_table(rows: dict[str, dict]) -> None:
    head = " ".join(f"{name:>27}" for name in LIMITS)
    print(f"\n{'cell':48} {head}  lag ms  1 req")
    for cell_id, row in rows.items():
        if "status" in row:
            print(f"{cell_id[:48]:48} not compared: {row['status']}")
            continue
        cols = []
        for name, (kind, _) in LIMITS.items():
            r = row.get(name)
            unit, scale = ("pt", 100) if kind == "abs" else ("%", 100)
            verdict = "ok" if r and r["ok"] else "noise" if r and r["within_noise"] else "OFF"
            text = (
                "-"
                if r is None
                else f"{r['error'] * scale:+.1f}{unit} ({r['live_spread'] * scale:.1f}) {verdict}"
            )
            cols.append(f"{text:>27}")
        lag = max(row["live_step_lag_ms"], default=float("nan"))
        share = row["one_request_share"] or float("nan")
        print(f"{cell_id[:48]:48} " + " ".join(cols) + f"  {lag:6.2f}  {share * 100:4.1f}pt")
    print(
        "(error to the live mean; in parentheses the live runs' spread, max - min; lag: the live "
        "engines' mean step lag; last: one request's share of the prompt tokens)"
    )


def median_spread(rows: dict[str, dict]) -> dict[str, float | None]:
    """Per metric, the median over the compared cells of the live runs' spread (the A/A noise)."""
    out: dict[str, float | None] = {}
    for name in LIMITS:
        spreads = [row[name]["live_spread"] for row in rows.values() if name in row]
        out[name] = statistics.median(spreads) if spreads else None
    return out


def live_runs(label: str, spec: Path, work: Path, runs: int, reuse: bool) -> list[dict]:
    """The live half, `runs` times (reused where --reuse-live finds a finished one)."""
    out = []
    for index in range(runs):
        live_dir = work / label / f"live-{index}"
        load_before = os.getloadavg()
        if reuse and (live_dir / "manifest.json").is_file():
            timing = reused_run(live_dir)  # the live half of an earlier call, same spec and seed
        else:
            shutil.rmtree(live_dir, ignore_errors=True)
            timing = run_spec(str(spec), live_dir, "emulated")
        out.append(
            {
                "run_dir": timing.run_dir,
                "wall_s": timing.wall_s,
                "exit_code": timing.exit_code,
                "loadavg_1m": [load_before[0], os.getloadavg()[0]],
            }
        )
    return out


def agreement(
    label: str,
    spec: Path,
    work: Path,
    overrides: dict | None,
    reuse_live: bool,
    runs: int,
    live_label: str | None = None,
) -> dict:
    live = live_runs(live_label or label, spec, work, runs, reuse_live or live_label is not None)
    shutil.rmtree(work / label / "simulated", ignore_errors=True)
    sim = run_spec(str(spec), work / label / "simulated", "simulated")
    rows = compare(live_reference([run["run_dir"] for run in live]), read_cells(sim.run_dir))
    print_table(rows)
    agree = sum(cell_ok(row, "ok") for row in rows.values())
    noise = sum(cell_ok(row, "within_noise") for row in rows.values())
    overloaded = sum(bool(row.get("live_overloaded")) for row in rows.values())
    rate = sim.simulated_s / sim.wall_s if sim.wall_s else None
    live_wall = [run["wall_s"] for run in live]
    print(
        f"{label}: {agree}/{len(rows)} cells within every bound of the mean of {runs} live runs "
        f"({noise}/{len(rows)} within bound or live spread; {overloaded} with an overloaded live "
        f"stack, step lag > {OVERLOADED_LAG_MS:g} ms); live A/A spread (median over cells) "
        + ", ".join(f"{k} {v:.3g}" for k, v in median_spread(rows).items() if v is not None)
        + f"; live wall {sum(live_wall):.1f} s, simulated wall {sim.wall_s:.1f} s for "
        f"{sim.simulated_s:.0f} simulated s"
    )
    return {
        "spec": str(spec),
        "overrides": overrides,
        "live_runs": runs,
        "live_runs_shared_with": live_label,
        "live_wall_s": live_wall,
        "live_exit_codes": [run["exit_code"] for run in live],
        "live_loadavg_1m_before_after": [run["loadavg_1m"] for run in live],
        "simulated_wall_s": sim.wall_s,
        "simulated_exit_code": sim.exit_code,
        "simulated_s": sim.simulated_s,
        "simulated_s_per_wall_s": rate,
        "cells_within_bounds": agree,
        "cells_within_bounds_or_live_spread": noise,
        "cells_compared": len(rows),
        "cells_live_overloaded": overloaded,
        "live_spread_median": median_spread(rows),
        "cells": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="bundled experiments (default: all)")
    parser.add_argument("--spec", type=Path, default=None, help="one spec file, as it is")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--reuse-live",
        action="store_true",
        help="keep the live runs already under --work (re-run only the simulated half)",
    )
    parser.add_argument(
        "--live-runs",
        type=int,
        default=None,
        help="live runs per case (default: LIVE_RUNS, else 1; --spec: 3)",
    )
    args = parser.parse_args()
    missing = set(experiment_names()) - set(SUBSETS)
    if missing:
        parser.error(f"no agreement subset for bundled experiment(s) {sorted(missing)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="kvbench-agreement-"))
    work.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "simulator_agreement.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results = results if "experiments" in results else {"limits": LIMITS, "experiments": {}}
    if args.spec is not None:
        jobs = [(args.spec.stem, args.spec, None)]
    else:
        names = args.names or sorted(SUBSETS)
        jobs = [(name, subset_spec(name, work), SUBSETS[name]) for name in names]
    all_agree = True
    done: set[str] = set()
    for label, spec, overrides in jobs:
        runs = args.live_runs or LIVE_RUNS.get(label, 3 if args.spec else 1)
        shared = SHARED_LIVE.get(label)
        live_label = shared if shared in done else None  # its runs are under --work already
        outcome = agreement(label, spec, work, overrides, args.reuse_live, runs, live_label)
        done.add(label)
        all_agree &= outcome["cells_within_bounds"] == outcome["cells_compared"]
        results["experiments"][label] = outcome
        save("simulator_agreement", results)
    print(f"saved {path}")
    return 0 if all_agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
