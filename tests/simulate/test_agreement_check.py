"""The agreement benchmark's comparison (benchmarks/simulator/agreement.py): the simulated cell
against the mean of several live runs, with the live runs' spread as the noise floor, and the live
engines' step lag read off the cell's server metrics. Exact expectations on hand-made run dirs."""

import importlib
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "simulator"


@pytest.fixture(scope="module")
def agreement():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("agreement")
    finally:
        sys.path.remove(str(BENCH))


def write_run(run_dir: Path, cells: dict[str, dict]) -> Path:
    """A run dir with a manifest and one cell.json per cell: {cell_id: {status, summary}}."""
    (run_dir / "cells").mkdir(parents=True)
    manifest = {"cells": [{"cell_id": cell_id} for cell_id in cells]}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    for cell_id, cell in cells.items():
        (run_dir / "cells" / cell_id).mkdir()
        (run_dir / "cells" / cell_id / "cell.json").write_text(json.dumps(cell))
    return run_dir


def summary(hit: float, tok_s: float, ttft_ms: float, tpot_ms: float) -> dict:
    return {
        "cached_prompt_fraction": hit,
        "output_tokens_per_s": tok_s,
        "ttft_mean_ms": ttft_ms,
        "tpot_p50_ms": tpot_ms,
    }


def test_the_reference_is_the_live_mean_and_the_spread_is_the_noise_floor(agreement, tmp_path):
    runs = [
        write_run(tmp_path / "a", {"c": {"status": "ok", "summary": summary(0.28, 100, 200, 10)}}),
        write_run(tmp_path / "b", {"c": {"status": "ok", "summary": summary(0.34, 100, 240, 10)}}),
    ]
    reference = agreement.live_reference(runs)
    assert reference["c"].ok and reference["c"].values["prefix_hit_fraction"] == [0.28, 0.34]
    simulated = {"c": {"status": "ok", "summary": summary(0.265, 104, 198, 10.6)}}
    row = agreement.compare(reference, simulated)["c"]
    hit, ttft, tpot = row["prefix_hit_fraction"], row["ttft_mean_ms"], row["tpot_p50_ms"]
    assert hit["live"] == pytest.approx(0.31) and hit["error"] == pytest.approx(-0.045)
    assert hit["live_spread"] == pytest.approx(0.06)  # max - min, in points
    assert not hit["ok"] and hit["within_noise"]  # beyond 2 points, within the live runs' spread
    assert ttft["error"] == pytest.approx(-0.1) and ttft["ok"]  # 198 vs the mean 220: -10 %
    assert ttft["live_spread"] == pytest.approx(40 / 220)
    assert not tpot["ok"] and not tpot["within_noise"]  # +6 %, and the live runs agree exactly
    assert not agreement.cell_ok(row, "ok") and not agreement.cell_ok(row, "within_noise")
    assert row["live_step_lag_ms"] == []  # no server metrics in these run dirs


def test_a_cell_that_failed_in_one_live_run_is_not_compared(agreement, tmp_path):
    ok = {"status": "ok", "summary": summary(0.5, 100, 200, 10)}
    runs = [
        write_run(tmp_path / "a", {"c": ok}),
        write_run(tmp_path / "b", {"c": {"status": "failed", "summary": {}}}),
    ]
    reference = agreement.live_reference(runs)
    assert not reference["c"].ok and reference["c"].statuses == ["ok", "failed"]
    rows = agreement.compare(reference, {"c": ok})
    assert rows["c"]["status"]["ok"] is False and not agreement.cell_ok(rows["c"], "ok")


def test_step_lag_is_the_lag_sum_over_the_step_count(agreement, tmp_path):
    cell = tmp_path / "cells" / "c"
    cell.mkdir(parents=True)
    name = "kvbench:engine_step_lag_seconds"
    rows = [  # cumulative counters at the cell's first and last scrape, two engines
        ("engine-0", f"{name}_sum", 1.0),
        ("engine-0", f"{name}_sum", 1.3),
        ("engine-0", f"{name}_count", 100.0),
        ("engine-0", f"{name}_count", 200.0),
        ("engine-1", f"{name}_sum", 0.0),
        ("engine-1", f"{name}_sum", 0.1),
        ("engine-1", f"{name}_count", 0.0),
        ("engine-1", f"{name}_count", 100.0),
    ]
    frame = pd.DataFrame(rows, columns=["source", "metric", "value"])
    frame.to_parquet(cell / "server_metrics.parquet")
    assert agreement.step_lag_ms(cell) == pytest.approx(1000 * 0.4 / 200)
    assert agreement.step_lag_ms(tmp_path / "cells" / "none") is None
