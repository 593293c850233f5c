"""Simulator speed: wall time, simulated seconds per wall second and peak memory for
- `quickstart` (the bundled quickstart: 7 scenarios x 3 levels x 3 repeats; goal < 10 s a cell),
- `cluster` (benchmarks/simulator/cluster.yaml: 64 engines, precise routing, 2,000 concurrent
  conversations, 120 s; goal < 2 min and < 4 GiB),
- `eval` (the seed evaluation llm-d-kvcache-eval, 224 cells; goal < 20 min on 2 cores),
- `tiered-high` / `tiered-low` (the llm-d tiered-prefix-cache guide's pair, 3 cells each: 8
  engines, 450 requests of 30k / 8k-token prompts and 1,024 output tokens at concurrency 45),
each on the simulated target (cells in worker processes as the target's `workers` says).
Prints a line per case and writes benchmarks/results/simulator_speed.json (merged per case), with
the machine's load average sampled during the case (the machine may be shared: a load above the
core count means the numbers are slower than an idle machine's).

    .venv/bin/python benchmarks/simulator/speed.py [quickstart] [cluster] [eval]
        [tiered-high] [tiered-low]
        [--only K=V ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
from pathlib import Path

import yaml
from runs import RESULTS_DIR, read_cells, run_spec, save

HERE = Path(__file__).resolve().parent
CASES = {
    "quickstart": "quickstart",
    "cluster": str(HERE / "cluster.yaml"),
    "eval": "llm-d-kvcache-eval",
    "tiered-high": "llm-d-tiered-prefix-cache-high",  # the guide's pair: 8 engines, 30k prompts
    "tiered-low": "llm-d-tiered-prefix-cache-low",
}


def spec_for(case: str, work: Path, cluster_duration_s: float | None) -> str:
    """The case's spec; the cluster cell with another duration when asked (a shorter smoke)."""
    if case != "cluster" or cluster_duration_s is None:
        return CASES[case]
    spec = yaml.safe_load(Path(CASES[case]).read_text())
    spec["load"]["duration_s"] = cluster_duration_s
    path = work / f"cluster-{cluster_duration_s:g}s.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


class LoadSampler:
    """The 1-minute load average every `interval_s` while running (a background thread)."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        s = self.samples
        return {"mean": sum(s) / len(s), "max": max(s), "samples": len(s), "cores": os.cpu_count()}


def measure(case: str, work: Path, only: list[str], cluster_duration_s: float | None) -> dict:
    spec = spec_for(case, work, cluster_duration_s)
    with LoadSampler() as load:
        timing = run_spec(spec, work / case, "simulated", only)
    cells = read_cells(timing.run_dir)
    walls = sorted((c.get("client") or {}).get("wall_s") or 0.0 for c in cells.values())
    result = {
        "spec": spec,
        "only": only,
        "exit_code": timing.exit_code,
        "cells": timing.cells,
        "cells_ok": sum(c["status"] == "ok" for c in cells.values()),
        "wall_s": timing.wall_s,
        "simulated_s": timing.simulated_s,
        "simulated_s_per_wall_s": timing.simulated_s / timing.wall_s if timing.wall_s else None,
        "cell_wall_s_max": walls[-1] if walls else None,
        "cell_wall_s_median": walls[len(walls) // 2] if walls else None,
        "peak_rss_mib": timing.peak_rss_mib,
        "load_average_1m": load.summary(),
    }
    print(
        f"{case}: {result['cells_ok']}/{result['cells']} cells ok in {timing.wall_s:.1f} s wall, "
        f"{timing.simulated_s:,.0f} simulated s ({result['simulated_s_per_wall_s']:.1f} per wall s), "
        f"slowest cell {result['cell_wall_s_max']:.1f} s, peak RSS {timing.peak_rss_mib:,.0f} MiB, "
        f"load average {result['load_average_1m']['mean']:.1f} mean / "
        f"{result['load_average_1m']['max']:.1f} max on {os.cpu_count()} cores"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=["quickstart", "cluster"], choices=list(CASES))
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--cluster-duration-s", type=float, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="kvbench-sim-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "simulator_speed.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for case in args.cases:
        key = (
            case
            if not (case == "cluster" and args.cluster_duration_s)
            else (f"cluster-{args.cluster_duration_s:g}s")
        )
        results[key] = measure(case, work, args.only, args.cluster_duration_s)
        save("simulator_speed", results)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
