"""Gather the `kvbench compare` CSVs of benchmarks/results/gpu-h200/compare/ into one JSON with the
issue's bounds and, per metric, how many cells fall inside them.

Usage: python benchmarks/gpu/validation_summary.py   (writes benchmarks/results/gpu_h200_validation.json)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
COMPARE_DIR = RESULTS / "gpu-h200" / "compare"
# relative bounds for rates and latencies; fractions and gains in percentage points
BOUNDS = {
    "output_tokens_per_s": 0.03,
    "ttft_mean_ms": 0.10,
    "ttft_p50_ms": 0.10,
    "tpot_p50_ms": 0.05,
    "cached_prompt_fraction": 2.0,
    "offload_gain": 2.0,
}


def _within(metric: str, difference: float) -> bool:
    """compare's CSV gives rates and latencies as fractions, the cached fraction and the offload
    gain in points: each against its BOUNDS entry as it stands."""
    return abs(difference) <= BOUNDS[metric]


def main() -> None:
    groups: dict[str, dict[str, object]] = {}
    for path in sorted(COMPARE_DIR.glob("*.csv")):
        rows = [row for row in csv.DictReader(path.open()) if row["metric"] in BOUNDS]
        rows = [row for row in rows if row["difference"] not in ("", "nan")]
        tally = {
            metric: {
                "cells": sum(1 for row in rows if row["metric"] == metric),
                "within": sum(
                    1
                    for row in rows
                    if row["metric"] == metric and _within(metric, float(row["difference"]))
                ),
            }
            for metric in BOUNDS
        }
        groups[path.stem] = {"tally": tally, "rows": rows}
    summary = {
        "what": "kvbench compare: real vLLM 0.26.0 on one H200 (A) vs the simulated target with "
        "the catalog's H200-vLLM-0.26 profile (B), per cell",
        "fitted_on": "grid-* and sweep-* (benchmarks/gpu/specs/grid-qwen3-*.yaml, sweep-qwen3-*.yaml) and the probes; refit with benchmarks/gpu/refit_cells.py (per-cell scores in gpu_h200_refit.json)",
        "validation": "validation-* (benchmarks/gpu/specs/validation-qwen3-*.yaml: 0.6B, 8B, 14B), never fitted; lmcache-* (lmcache-qwen3-0.6b.yaml): the LMCache terms were fitted on lmcache-local (copy rate, per-chunk and per-request work) and lmcache-redis (remote path rate), lmcache-valkey is a prediction (its connector's worker pool, no fitted term)",
        "bounds": BOUNDS,
        "groups": groups,
    }
    out = RESULTS / "gpu_h200_validation.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    for name, group in groups.items():
        tally = group["tally"]
        assert isinstance(tally, dict)
        cells = ", ".join(f"{m} {t['within']}/{t['cells']}" for m, t in tally.items() if t["cells"])
        print(f"{name}: {cells}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
