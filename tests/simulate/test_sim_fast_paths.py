"""The simulated target's delivery fast paths change no record: a small spec (prefix routing on a
real Redis index, timeouts that cut turns mid-answer) gives byte-identical requests.parquet and
server metrics with the fast paths on and with every one of them off (every output delivered to
the client's listener, as a chat turn's are)."""

from pathlib import Path

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


def run_spec(out: Path) -> dict[str, bytes]:
    out.mkdir(parents=True)
    spec = out / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert main(["run", str(spec), "--out", str(out / "run")]) in (0, 1)
    files = {}
    for cell in sorted((out / "run" / "cells").iterdir()):
        for name in ("requests.parquet", "server_metrics.parquet"):
            parts = sorted((cell / name).glob("*.parquet")) if (cell / name).is_dir() else []
            files[f"{cell.name}/{name}"] = b"".join(p.read_bytes() for p in parts)
    return files


def test_fast_paths_give_the_records_of_the_general_paths(tmp_path, monkeypatch):
    fast = run_spec(tmp_path / "fast")
    submit = engine_node.SimEngine.submit

    def every_output(self, request, listener, every_output=True):
        return submit(self, request, listener, True)

    monkeypatch.setattr(engine_node.SimEngine, "submit", every_output)
    general = run_spec(tmp_path / "general")
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
