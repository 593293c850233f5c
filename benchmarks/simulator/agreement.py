"""Agreement of the simulated target with the real-time emulated target (same code, same spec and
seed), per cell (one cell = one scenario at one level): prefix-hit fraction within 2 points, output
tok/s within 5 %, TTFT mean within 10 %, TPOT p50 within 5 %. Prints a table, wall times and
simulated seconds per wall second, and writes benchmarks/results/simulator_agreement.json (merged
per experiment, so experiments can be run one at a time).

    .venv/bin/python benchmarks/simulator/agreement.py [NAME ...] [--spec FILE] [--work DIR]

Default: a small subset (SUBSETS: one model, one or two low levels, a short window, every scenario)
of EVERY bundled experiment; NAME picks some of them. `--spec FILE` compares one spec file as it is
(e.g. agreement-small.yaml). The live half runs in real time: run it on a quiet machine (a loaded
one shows as emulator lag, and the live numbers drift).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from runs import RESULTS_DIR, RunTiming, metric, read_cells, run_spec, save

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


def compare(live: dict, simulated: dict) -> dict[str, dict]:
    rows = {}
    for cell_id, live_cell in live.items():
        sim_cell = simulated.get(cell_id)
        if sim_cell is None or live_cell["status"] != "ok" or sim_cell["status"] != "ok":
            rows[cell_id] = {
                "status": {
                    "live": live_cell["status"],
                    "simulated": sim_cell["status"] if sim_cell else None,
                    "ok": False,
                }
            }
            continue
        row = {}
        for name, (kind, bound) in LIMITS.items():
            a, b = metric(live_cell["summary"], name), metric(sim_cell["summary"], name)
            if a is None or b is None:
                continue
            error = b - a if kind == "abs" else (b - a) / a if a else float("inf")
            row[name] = {"live": a, "simulated": b, "error": error, "ok": abs(error) <= bound}
        rows[cell_id] = row
    return rows


def reused_run(run_dir: Path) -> RunTiming:
    """An earlier live run, with the wall time recorded next to it."""
    wall = (
        json.loads((run_dir / "wall.json").read_text()) if (run_dir / "wall.json").is_file() else {}
    )
    return RunTiming(
        run_dir, 0, wall.get("wall_s", float("nan")), 0.0, len(read_cells(run_dir)), 0.0
    )


def print_table(rows: dict[str, dict]) -> None:
    print(f"\n{'cell':56} " + " ".join(f"{name:>20}" for name in LIMITS))
    for cell_id, row in rows.items():
        if "status" in row:
            print(f"{cell_id[:56]:56} not compared: {row['status']}")
            continue
        cols = []
        for name, (kind, _) in LIMITS.items():
            r = row.get(name)
            unit = "pt" if kind == "abs" else "%"
            text = (
                "-" if r is None else f"{r['error'] * 100:+.1f}{unit} {'ok' if r['ok'] else 'OFF'}"
            )
            cols.append(f"{text:>20}")
        print(f"{cell_id[:56]:56} " + " ".join(cols))


def agreement(label: str, spec: Path, work: Path, overrides: dict | None, reuse_live: bool) -> dict:
    live_dir = work / label / "live"
    if reuse_live and (live_dir / "manifest.json").is_file():
        live = reused_run(live_dir)  # the live half of an earlier call, same spec and seed
    else:
        live = run_spec(str(spec), live_dir, "emulated")
    shutil.rmtree(work / label / "simulated", ignore_errors=True)
    sim = run_spec(str(spec), work / label / "simulated", "simulated")
    rows = compare(read_cells(live.run_dir), read_cells(sim.run_dir))
    print_table(rows)
    agree = sum(all(r["ok"] for r in row.values()) for row in rows.values())
    rate = sim.simulated_s / sim.wall_s if sim.wall_s else None
    print(
        f"{label}: {agree}/{len(rows)} cells within every bound; live wall {live.wall_s:.1f} s, "
        f"simulated wall {sim.wall_s:.1f} s for {sim.simulated_s:.0f} simulated s"
    )
    return {
        "spec": str(spec),
        "overrides": overrides,
        "live_wall_s": live.wall_s,
        "live_exit_code": live.exit_code,
        "simulated_wall_s": sim.wall_s,
        "simulated_exit_code": sim.exit_code,
        "simulated_s": sim.simulated_s,
        "simulated_s_per_wall_s": rate,
        "cells_within_bounds": agree,
        "cells_compared": len(rows),
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
    for label, spec, overrides in jobs:
        outcome = agreement(label, spec, work, overrides, args.reuse_live)
        all_agree &= outcome["cells_within_bounds"] == outcome["cells_compared"]
        results["experiments"][label] = outcome
        save("simulator_agreement", results)
    print(f"saved {path}")
    return 0 if all_agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
