"""The bad-input pass: every kind of bad spec, flag and file the fault pass tried, through the real
CLI (in process). For each: the exit code, whether stderr was exactly one line without a traceback,
and how long it took (a bad input must be refused at once, not after allocating or hanging).

Prints and saves JSON to benchmarks/results/reliability_bad_inputs.json. Not a test: no gate (the
tests under tests/spec, tests/results, tests/experiment/test_run_safety.py and tests/fuzz assert
the same contract on their own inputs).
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import textwrap
import time
from pathlib import Path

from kvbench.cli import main

SPEC = textwrap.dedent("""
    name: t
    models: [Qwen/Qwen3-0.6B]
    scenarios: [no-offload, native-offload]
    target: {kind: emulated, hardware: H100-SXM}
    workload: {kind: multi_turn_shared_prefix, prefix_tokens: 64, prefix_count: 2, turns: 2,
               prompt_tokens: 16, output_tokens: 8, conversations: 4}
    load: {strategy: concurrent, levels: [1, 2], requests_per_level: 8}
""")
SPEC_EDITS = [  # (old, new): each makes the spec wrong in one place
    ("levels: [1, 2]", "levels: [1.0e+9]"),
    ("levels: [1, 2]", "levels: []"),
    ("levels: [1, 2]", "levels: [1.5]"),
    ("levels: [1, 2]", "levels: [-1]"),
    ("levels: [1, 2]", "levels: [.nan]"),
    ("hardware: H100-SXM}", "hardware: H100-SXM, engines: 1.0e+12}"),
    ("hardware: H100-SXM}", "hardware: H100-SXM, engines: 0}"),
    ("hardware: H100-SXM}", "hardware: H100-SXM, block_size: 7}"),
    ("hardware: H100-SXM}", "hardware: H100-SXM, num_gpu_blocks_override: 100000000000}"),
    ("hardware: H100-SXM}", "hardware: H100-SXM, num_gpu_blocks_override: 2000000000}"),
    ("hardware: H100-SXM}", "hardware: H100-SXM, tensor_parallel_size: 3}"),
    ("hardware: H100-SXM}", "hardware: H100-SXM, gpu_memory_utilization: 1.5}"),
    ("hardware: H100-SXM}", "hardware: H100-SXM, max_model_len: 100000000}"),
    ("hardware: H100-SXM}", "hardware: H100-SXM, extra_args: [--no-such-flag]}"),
    ("hardware: H100-SXM}", "hardware: H100-SXM, extra_args: [--kv-transfer-config, '{bad']}"),
    ("H100-SXM", "L4"),
    ("Qwen/Qwen3-0.6B", "Qwen3-14B-Instruct"),
    ("native-offload", "native-ofload"),
    ("requests_per_level: 8}", "duration_s: .inf}"),
    ("requests_per_level: 8}", "duration_s: -3}"),
    ("requests_per_level: 8}", "requests_per_level: 8, warmup_s: .nan}"),
    ("requests_per_level: 8}", "requests_per_level: 8, request_timeout_s: 1.0e+12}"),
    ("requests_per_level: 8}", "}"),
    ("name: t", "name: t\nseed: -1"),
    ("name: t", "name: t\nseed: 1.0e+30"),
    ("name: t", "name: t\nrepeats: 1000000"),
    ("name: t", "name: ../../escaped"),
    ("name: t", 'name: "a\\0b"'),
    ("name: t", "name: ''"),
    ("name: t", "name: t\nbogus_key: 1"),
    ("prefix_tokens: 64", "prefix_tokes: 64"),
    ("prefix_tokens: 64", "prefix_tokens: 1.0e+30"),
    ("prefix_tokens: 64", "prefix_tokens: -64"),
    ("prefix_tokens: 64", "prefix_tokens: '64k'"),
    ("conversations: 4", "conversations: 1.0e+12"),
    ("prompt_tokens: 16,", "prompt_tokens: 5000000,"),
    ("prompt_tokens: 16,", "prompt_tokens: {kind: normal, mean: 16, min: 9, max: 3},"),
    ("turns: 2", "turns: 0"),
    ("kind: multi_turn_shared_prefix", "kind: nonsense"),
    ("kind: emulated", "kind: nonsense"),
    ("strategy: concurrent", "strategy: warp"),
    ("name: t", "name: t\nscenario_params: {num_cpu_blokcs: [1]}"),
    ("name: t", "name: t\nscenario_params: {engines: [1, 1.0e+12]}"),
    ("name: t", "name: t\nscenario_files: [missing.yaml]"),
    ("name: t", "[unclosed"),
    ("name: t", "name: &n [*n]"),
]
BOMB = (
    SPEC
    + "scenario_params:\n"
    + "\n".join(
        [f"  a0: &a0 [{', '.join(['x'] * 10)}]"]
        + [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    )
    + "\n  num_cpu_blocks: *a8\n"
)
RAW_SPECS = [
    b"name: caf\xe9\n",
    b"\x00\x01\x02",
    b"",
    b"- 1\n- 2\n",
    b"\xff\xfe" + b"x",
    BOMB.encode(),
]
FLAGS = [
    ["emulate", "serve", "Qwen/Qwen3-0.6B", "--num-gpu-blocks-override", "100000000000"],
    ["emulate", "serve", "Qwen/Qwen3-0.6B", "--num-gpu-blocks-override", "2000000000"],
    ["emulate", "serve", "Qwen/Qwen3-0.6B", "--max-num-seqs", "10000000"],
    ["emulate", "serve", "Qwen/Qwen3-0.6B", "--block-size", "7"],
    ["emulate", "serve", "Qwen/Qwen3-0.6B", "--hardware", "L4"],
    ["emulate", "serve", "No/Such-Model"],
    ["emulate", "serve", "Qwen/Qwen3-0.6B", "--port", "70000"],
    ["emulate", "serve", "Qwen/Qwen3-0.6B", "--kv-transfer-config", "{bad"],
    [
        "emulate",
        "router",
        "--config",
        "x.yaml",
        "--endpoint",
        "http://127.0.0.1:1",
        "--refresh-metrics-interval",
        "0s",
    ],
    ["emulate", "router", "--config", "x.yaml", "--endpoint", "127.0.0.1:1"],
    ["run", "no-such-experiment"],
    ["run", "quickstart", "--only", "bogus=1"],
    ["report", "/no/such/run"],
    ["report", ".", "--format", "pdf"],
]
GUIDELLM = [
    {"benchmarks": []},
    {"benchmarks": {"a": 1}},
    {"results": []},
    [1, 2, 3],
    {"benchmarks": [{"x": 1}]},
    {
        "benchmarks": [
            {"config": {"strategy": {"type_": "concurrent"}}, "requests": {}, "start_time": 1}
        ]
    },
    {"benchmarks": [{"config": {"strategy": {"type_": "warp"}}, "requests": {}, "start_time": 1}]},
    {
        "benchmarks": [
            {"config": {"strategy": {"type_": "constant"}}, "requests": {}, "start_time": 1}
        ]
    },
    {
        "benchmarks": [
            {"config": {"strategy": {"type_": "synchronous"}}, "requests": [1], "start_time": 1}
        ]
    },
    {
        "benchmarks": [
            {"config": {"strategy": {"type_": "synchronous"}}, "requests": {}, "start_time": "x"}
        ]
    },
    {
        "benchmarks": [
            {
                "config": {"strategy": {"type_": "synchronous"}},
                "requests": {"successful": [None]},
                "start_time": 1,
            }
        ]
    },
]


def _run(argv: list[str]) -> dict:
    err = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    text = err.getvalue()
    lines = [line for line in text.strip().splitlines() if line]
    return {
        "argv": " ".join(argv)[:200],
        "exit_code": code,
        "one_line": len(lines) == 1 and "Traceback" not in text,
        "seconds": round(time.perf_counter() - started, 3),
        "message": lines[-1][:200] if lines else "",
    }


def main_pass() -> dict:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for index, (old, new) in enumerate(SPEC_EDITS):
            assert old in SPEC, old
            path = root / f"spec-{index}.yaml"
            path.write_text(SPEC.replace(old, new, 1))
            results.append({"kind": "spec", **_run(["run", str(path), "--dry-run"])})
        for index, raw in enumerate(RAW_SPECS):
            path = root / f"raw-{index}.yaml"
            path.write_bytes(raw)
            results.append({"kind": "spec file", **_run(["run", str(path), "--dry-run"])})
        for argv in FLAGS:
            results.append({"kind": "flag", **_run(argv)})
        for index, document in enumerate(GUIDELLM):
            path = root / f"guidellm-{index}.json"
            path.write_text(json.dumps(document))
            out = root / f"import-{index}"
            row = _run(["import", "guidellm", str(path), "--out", str(out)])
            row["left_a_run_dir"] = out.exists()
            results.append({"kind": "guidellm file", **row})
    broken = [
        r for r in results if r["exit_code"] != 2 or not r["one_line"] or r.get("left_a_run_dir")
    ]
    return {
        "bad_inputs_tried": len(results),
        "one_line_exit_2": len(results) - len(broken),
        "contract_broken": broken,
        "slowest_s": max(r["seconds"] for r in results),
        "by_kind": {
            k: sum(r["kind"] == k for r in results) for k in sorted({r["kind"] for r in results})
        },
        "results": results,
    }


if __name__ == "__main__":
    summary = main_pass()
    out = Path(__file__).resolve().parents[1] / "results" / "reliability_bad_inputs.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=1))
