"""Cells that cannot progress on the simulated target end with the reason instead of spinning:
- a request no engine can ever schedule (here: an engine admitting no request at all) would poll
  the engine forever, each retry ending by its timeout; the engine's stall check ends the cell
  after 60 s of simulated time with nothing scheduled, saying why; the records so far are kept;
- a conversation longer than max_model_len is refused before any cell runs (one line naming the
  workload, exit 2)."""

import json

import pandas as pd
import yaml
from tests.simulate.test_simulated_target import SPEC

import kvbench.simulate.stack as sim_stack
from kvbench.cli import main


def write(tmp_path, **changes):
    spec = {
        **SPEC,
        "scenarios": ["no-offload"],
        "target": {**SPEC["target"], "kind": "simulated", "workers": 1},
        **changes,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_request_that_can_never_be_scheduled_fails_the_cell_with_the_reason(
    tmp_path, monkeypatch
):
    real_build = sim_stack.build_engine

    def admitting_nothing(*args, **kwargs):
        engine = real_build(*args, **kwargs)
        engine.scheduler.limits.max_num_seqs = 0  # nothing waiting ever starts running
        return engine

    monkeypatch.setattr(sim_stack, "build_engine", admitting_nothing)
    # 400 requests that each time out after 30 s: 100 rounds of idle polling without the check
    load = {"strategy": "concurrent", "levels": [4], "requests_per_level": 400}
    path = write(
        tmp_path,
        load={**load, "request_timeout_s": 30},
        cache={"reset": True, "prime": False, "verify": True},
    )
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run)]) == 1
    (ref,) = json.loads((run / "manifest.json").read_text())["cells"]
    cell = json.loads((run / "cells" / ref["cell_id"] / "cell.json").read_text())
    assert cell["status"] == "failed"
    assert "simulation stalled: sim-engine-" in cell["error"]
    assert "scheduled nothing for 60 s of simulated time" in cell["error"]
    assert "can never be scheduled" in cell["error"]
    rows = pd.read_parquet(run / "cells" / ref["cell_id"] / "requests.parquet")
    assert 0 < len(rows) < 40 and set(rows.status) == {"timeout"}


def test_a_conversation_longer_than_max_model_len_is_refused_up_front(tmp_path, capsys):
    workload = {**SPEC["workload"], "prefix_tokens": 5000}  # max_model_len 4096
    path = write(tmp_path, workload=workload)
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "workload: a conversation need" in err and "serves 4096" in err
