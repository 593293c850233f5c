"""Agreement of the simulated target with the real-time emulated target (same code, same spec and
seed), per cell: prefix-hit fraction within 2 points, output tok/s within 5 %, TTFT mean within
10 %, TPOT p50 within 5 %. Prints a table, wall times and simulated seconds per wall second, and
writes benchmarks/results/simulator_agreement.json.

    .venv/bin/python benchmarks/simulator/agreement.py [SPEC] [--only KEY=VALUE ...] [--work DIR]

Default SPEC: quickstart-live (the seven scenarios, one level). The live run is real time: run it
on a quiet machine (a loaded one shows as emulator lag, and the live numbers drift).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from runs import metric, read_cells, run_spec, save

LIMITS = {  # metric -> (kind, bound): "abs" = absolute difference, "rel" = relative to live
    "prefix_hit_fraction": ("abs", 0.02),
    "output_tok_s": ("rel", 0.05),
    "ttft_mean_ms": ("rel", 0.10),
    "tpot_p50_ms": ("rel", 0.05),
}


def compare(live: dict, simulated: dict) -> dict[str, dict]:
    rows = {}
    for cell_id, live_cell in live.items():
        sim_cell = simulated.get(cell_id)
        if sim_cell is None or live_cell["status"] != "ok" or sim_cell["status"] != "ok":
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="quickstart-live")
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="kvbench-agreement-"))
    live = run_spec(args.spec, work / "live", "emulated", args.only)
    sim = run_spec(args.spec, work / "simulated", "simulated", args.only)
    rows = compare(read_cells(live.run_dir), read_cells(sim.run_dir))
    print(f"\n{'cell':52} " + " ".join(f"{name:>22}" for name in LIMITS))
    for cell_id, row in rows.items():
        cols = []
        for name, (kind, _) in LIMITS.items():
            r = row.get(name)
            text = (
                "-"
                if r is None
                else (
                    f"{r['error'] * 100:+.1f}{'pt' if kind == 'abs' else '%'} {'ok' if r['ok'] else 'OFF'}"
                )
            )
            cols.append(f"{text:>22}")
        print(f"{cell_id[:52]:52} " + " ".join(cols))
    agree = sum(all(r["ok"] for r in row.values()) for row in rows.values())
    print(
        f"\n{agree}/{len(rows)} cells within every bound; live wall {live.wall_s:.1f} s, "
        f"simulated wall {sim.wall_s:.1f} s for {sim.simulated_s:.0f} simulated s "
        f"({sim.simulated_s / sim.wall_s:.1f} simulated s per wall s)"
    )
    path = save(
        "simulator_agreement",
        {
            "spec": args.spec,
            "only": args.only,
            "limits": LIMITS,
            "live_wall_s": live.wall_s,
            "simulated_wall_s": sim.wall_s,
            "simulated_s": sim.simulated_s,
            "simulated_s_per_wall_s": sim.simulated_s / sim.wall_s,
            "cells_within_bounds": agree,
            "cells": rows,
        },
    )
    print(f"saved {path}")
    return 0 if agree == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
