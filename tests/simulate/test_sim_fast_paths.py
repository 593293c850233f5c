"""The simulated target's delivery fast paths change no record: a small spec (prefix routing on a
real Redis index, timeouts that cut turns mid-answer) and one that preempts (few GPU blocks, long
answers) give byte-identical requests.parquet and server metrics with the fast paths on and with
every one of them off (every output delivered to the client's listener, as a chat turn's are;
such a request never joins a decode run, engine/decode_run.py, so every token of it goes
through the engine's general step path)."""

from pathlib import Path

import pytest
import yaml

from kvbench.cli import main
from kvbench.simulate import engine_node

SPEC = {
    "name": "sim-fast-paths",
    "seed": 3,
    "models": ["Qwen/Qwen3-8B"],
    "scenarios": ["llm-d-redis", "no-offload"],
    "target": {
        "kind": "simulated",
        "workers": 1,
        "hardware": "L40S",
        "engines": 2,
        "num_gpu_blocks_override": 200,
        "max_model_len": 2048,
        "max_num_seqs": 4,
    },
    "workload": {
        "kind": "multi_turn_shared_prefix",
        "prefix_tokens": 512,
        "prefix_count": 4,
        "turns": 3,
        "prompt_tokens": 40,
        "output_tokens": 48,
        "conversations": 24,
        "reuse_order": "random",
    },
    # a timeout shorter than the slowest turns: some turns end as timeouts mid-answer
    "load": {"strategy": "concurrent", "levels": [6], "duration_s": 4, "request_timeout_s": 1.6},
    "cache": {"reset": True, "prime": False, "verify": True},
    "collect": {"interval_s": 1},
}
# few blocks and long answers: running requests are preempted (decode-run members among them)
# and resumed later, so a step delivers gaps longer than itself among its runs' members
PREEMPTING = {
    **SPEC,
    "scenarios": ["no-offload"],
    "target": {
        **SPEC["target"],
        "num_gpu_blocks_override": 80,
        "max_model_len": 1024,
        "max_num_seqs": 6,
    },
    "workload": {**SPEC["workload"], "prefix_tokens": 256, "output_tokens": 200, "turns": 2},
    "load": {**SPEC["load"], "levels": [8], "duration_s": 6, "request_timeout_s": 30},
}


def run_spec(out: Path, spec_values: dict = SPEC) -> dict[str, bytes]:
    out.mkdir(parents=True)
    spec = out / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_values))
    assert main(["run", str(spec), "--out", str(out / "run")]) in (0, 1)
    files = {}
    for cell in sorted((out / "run" / "cells").iterdir()):
        for name in ("requests.parquet", "server_metrics.parquet"):
            parts = sorted((cell / name).glob("*.parquet")) if (cell / name).is_dir() else []
            files[f"{cell.name}/{name}"] = b"".join(p.read_bytes() for p in parts)
    return files


@pytest.mark.parametrize("spec", [SPEC, PREEMPTING], ids=["timeouts", "preempting"])
def test_fast_paths_give_the_records_of_the_general_paths(tmp_path, monkeypatch, spec):
    fast = run_spec(tmp_path / "fast", spec)
    submit = engine_node.SimEngine.submit

    def every_output(self, request, listener, every_output=True):
        return submit(self, request, listener, True)

    monkeypatch.setattr(engine_node.SimEngine, "submit", every_output)
    general = run_spec(tmp_path / "general", spec)
    assert fast.keys() == general.keys() and all(fast.values())
    for name in fast:
        assert fast[name] == general[name], name


def test_the_spec_times_out_turns_mid_answer(tmp_path):
    import pandas as pd

    run_spec(tmp_path / "run")
    rows = pd.concat(
        pd.read_parquet(p) for p in (tmp_path / "run" / "run" / "cells").glob("*/requests.parquet")
    )
    timeouts = rows[rows.status == "timeout"]
    assert len(timeouts) > 0 and (timeouts.output_tokens > 0).any()
    assert (rows.status == "ok").sum() > len(timeouts)


def test_the_preempting_spec_preempts(tmp_path):
    import pandas as pd

    run_spec(tmp_path / "run", PREEMPTING)
    rows = pd.concat(
        pd.read_parquet(p)
        for p in (tmp_path / "run" / "run" / "cells").glob("*/server_metrics.parquet")
    )
    assert rows[rows.metric == "vllm:num_preemptions_total"].value.max() > 0
