"""The simulated run's progress shows throughput in simulated time: the level's updates count the
successful requests' output tokens over simulated seconds, and each cell's line says its output
tok/s (the cell summary's, per simulated second)."""

import json

import yaml
from tests.simulate.test_simulated_target import SPEC

from kvbench.experiment.cell_run import RunnerHooks
from kvbench.experiment.runner import run_experiment_cli


def test_progress_counts_output_tokens_per_simulated_second(tmp_path, capsys):
    spec = {
        **SPEC,
        "scenarios": ["no-offload"],
        "load": {**SPEC["load"], "levels": [4, 8]},
        "target": {**SPEC["target"], "kind": "simulated", "workers": 1},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    updates = []
    hooks = RunnerHooks(on_progress=updates.append)
    assert run_experiment_cli(path, tmp_path / "run", hooks=hooks, report=False) == 0
    measured = [u for u in updates if u.done >= 50]
    assert measured and all(u.output_tokens > 0 and 0 < u.elapsed_s < 10 for u in measured)
    # 16 output tokens per request (the workload's), every one of them ok
    assert all(u.output_tokens == 16 * u.ok for u in measured)
    err = capsys.readouterr().err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    for ref in manifest["cells"]:
        cell = json.loads((tmp_path / "run" / "cells" / ref["cell_id"] / "cell.json").read_text())
        tok_s = cell["summary"]["output_tokens_per_s"]
        assert f"last cell {tok_s:,.0f} output tok/s (simulated time)" in err
