"""The simulated target agrees with the real-time emulated target (same code, same spec and seed)
on a small steady cell: prefix-hit fraction within 2 points, output tok/s within 5 %, TTFT mean
within 10 %, TPOT p50 within 5 %. The live half is a short real-time cell over HTTP (engine and
router processes), so this is also the default suite's live end-to-end cell of the run command.
The larger comparison is benchmarks/simulator/agreement.py."""

import json
from pathlib import Path

import yaml

from kvbench.cli import main

SPEC = Path(__file__).resolve().parents[2] / "benchmarks" / "simulator" / "agreement-small.yaml"


def summary_of(run: Path) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    (cell,) = manifest["cells"]
    assert cell["status"] == "ok", cell
    return json.loads((run / "cells" / cell["cell_id"] / "cell.json").read_text())["summary"]


def test_simulated_agrees_with_the_live_emulated_stack(tmp_path):
    spec = yaml.safe_load(SPEC.read_text())
    spec["scenarios"] = ["native-offload"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    runs = {}
    for kind in ("emulated", "simulated"):
        runs[kind] = tmp_path / kind
        assert main(["run", str(path), "--target", kind, "--out", str(runs[kind])]) == 0
    live, sim = summary_of(runs["emulated"]), summary_of(runs["simulated"])
    assert live["requests_ok"] > 40 and sim["requests_ok"] > 40
    assert abs(sim["cached_prompt_fraction"] - live["cached_prompt_fraction"]) <= 0.02
    relative = lambda key: abs(sim[key] - live[key]) / live[key]  # noqa: E731
    assert relative("output_tokens_per_s") <= 0.05, (sim, live)
    assert relative("ttft_mean_ms") <= 0.10, (sim, live)
    assert relative("tpot_p50_ms") <= 0.05, (sim, live)
    live_manifest = json.loads((runs["emulated"] / "manifest.json").read_text())
    assert live_manifest["system_under_test"]["kind"] == "emulated"
