"""Corrupt or partial run files are detected: `kvbench report` names the cell and what is wrong,
counts it as failed and computes no number from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiment"))
from kv_endpoint import KvEndpoint  # noqa: E402

from kvbench.analysis.load import load_run  # noqa: E402
from kvbench.cli import main  # noqa: E402
from kvbench.experiment.runner import run_experiment_cli  # noqa: E402

SPEC = """
name: damaged
models: [tiny]
scenarios: [no-offload]
target: {{kind: endpoint, url: "{url}"}}
workload: {{kind: multi_turn_shared_prefix, prefix_tokens: 32, prefix_count: 2, turns: 2,
           prompt_tokens: 8, output_tokens: 4, conversations: 6}}
load: {{strategy: concurrent, levels: [1, 2], requests_per_level: 12}}
collect: {{interval_s: 0.2, system_metrics: false}}
"""
DAMAGED = "tiny__no-offload__2__r0"


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("damaged")
    with KvEndpoint() as server:
        (root / "spec.yaml").write_text(SPEC.format(url=server.url))
        assert run_experiment_cli(root / "spec.yaml", root / "run") == 0
    return root / "run"


def copy_run(clean_run: Path, tmp_path: Path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    return run


def damage_cell_json_binary(cell: Path) -> None:
    (cell / "cell.json").write_bytes(b"\x00\xff\x10 binary garbage")


def damage_cell_json_truncated(cell: Path) -> None:
    text = (cell / "cell.json").read_text()
    (cell / "cell.json").write_text(text[: len(text) // 2])


def damage_parquet_truncated(cell: Path) -> None:
    [part] = sorted((cell / "requests.parquet").iterdir())[:1]
    raw = part.read_bytes()
    part.write_bytes(raw[: len(raw) // 2])


def damage_rows_dropped(cell: Path) -> None:
    parts = sorted((cell / "requests.parquet").iterdir())
    frame = pd.concat([pd.read_parquet(p) for p in parts])
    for p in parts:
        p.unlink()
    frame.iloc[: len(frame) // 2].to_parquet(cell / "requests.parquet" / "part-00000.parquet")


def damage_summary_edited(cell: Path) -> None:
    data = json.loads((cell / "cell.json").read_text())
    data["summary"]["requests_ok"] += 5
    (cell / "cell.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (damage_cell_json_binary, "cell.json: not JSON"),
        (damage_cell_json_truncated, "cell.json: not JSON"),
        (damage_parquet_truncated, "requests.parquet"),
        (damage_rows_dropped, "successful measure-phase requests"),
        (damage_summary_edited, "successful measure-phase requests"),
    ],
)
def test_a_damaged_cell_is_named_failed_and_kept_out_of_the_numbers(
    clean_run, tmp_path, capsys, damage, expected
):
    run = copy_run(clean_run, tmp_path)
    damage(run / "cells" / DAMAGED)
    data = load_run(run)
    damaged = {c.cell_id: c for c in data.cells}[DAMAGED]
    assert not damaged.ok
    assert "run files damaged" in damaged.info.error and expected in damaged.info.error
    assert main(["report", str(run), "--format", "md,csv"]) == 0
    capsys.readouterr()
    text = (run / "report" / "REPORT.md").read_text()
    assert DAMAGED in text and "run files damaged" in text
    checks = pd.read_csv(run / "report" / "validity_checks.csv")
    completed = checks[checks["check"] == "cells completed"].iloc[0]
    assert completed["status"] == "FLAG" and DAMAGED in completed["evidence"]
    # no number from the damaged cell: the only level the peak can come from is the sound one
    peaks = pd.read_csv(run / "report" / "peak_throughput_all.csv")
    assert peaks["peak_level"].tolist() == [1.0]


def test_the_clean_run_has_no_damage(clean_run, tmp_path, capsys):
    assert all(cell.ok for cell in load_run(clean_run).cells)
    run = copy_run(clean_run, tmp_path)
    assert main(["report", str(run), "--format", "md,csv"]) == 0
    capsys.readouterr()
    checks = pd.read_csv(run / "report" / "validity_checks.csv")
    completed = checks[checks["check"] == "cells completed"].iloc[0]
    assert completed["status"] == "ok"
