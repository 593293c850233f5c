"""Every bad spec is one line naming the field, exit 2, before anything starts (also --dry-run).

The inputs are the ones a fault pass found to hang, allocate without limit, print a traceback or
fail only once engines started; each goes through the real CLI entry point (`kvbench run --dry-run`).
"""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from kvbench.cli import main

BASE = """
name: t
models: [Qwen/Qwen3-0.6B]
scenarios: [no-offload, native-offload]
target: {kind: emulated, hardware: H100-SXM}
workload: {kind: multi_turn_shared_prefix, prefix_tokens: 64, prefix_count: 2, turns: 2,
           prompt_tokens: 16, output_tokens: 8, conversations: 4}
load: {strategy: concurrent, levels: [1, 2], requests_per_level: 8}
"""


def run_dry(tmp_path, capsys, text: str | bytes) -> tuple[int, str, str]:
    path = tmp_path / "spec.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text))
    code = main(["run", str(path), "--dry-run"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], lines[0]


def test_the_base_spec_dry_runs(tmp_path, capsys):
    code, out, err = run_dry(tmp_path, capsys, BASE)
    assert code == 0, err
    assert "4 cells" in out


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("levels: [1, 2]", "levels: [1.0e+9]", "load.levels.0"),
        ("hardware: H100-SXM}", "hardware: H100-SXM, engines: 1.0e+12}", "target.engines"),
        ("requests_per_level: 8}", "duration_s: .inf}", "load.duration_s"),
        ("requests_per_level: 8}", "requests_per_level: 8, warmup_s: .nan}", "load.warmup_s"),
        ("name: t", "name: t\nseed: -1", "seed"),
        ("prefix_tokens: 64", "prefix_tokens: 1.0e+30", "workload.prefix_tokens"),
        ("name: t", "name: ../../escaped", "name"),
        ("name: t", 'name: "a\\0b"', "name"),
        ("hardware: H100-SXM}", "hardware: H100-SXM, block_size: 7}", "target.block_size"),
        (
            "prompt_tokens: 16, output_tokens: 8, conversations: 4}",
            "prompt_tokens: 5000000, output_tokens: 8, conversations: 1000}",
            "prompt tokens in memory",
        ),
        ("name: t", "name: t\nrepeats: 1000000", "repeats"),
        ("prompt_tokens: 16,", "prompt_tokens: 50000,", "needs at least 100080 tokens"),
    ],
)
def test_unbounded_or_malformed_values_fail_at_load(tmp_path, capsys, old, new, expected):
    assert old in BASE
    code, _, err = run_dry(tmp_path, capsys, BASE.replace(old, new))
    assert_one_line(code, err, expected)


def test_unknown_hardware_names_the_field_and_the_known_names(tmp_path, capsys):
    code, _, err = run_dry(tmp_path, capsys, BASE.replace("H100-SXM", "L4"))
    assert_one_line(code, err, "target.hardware", "'L4'", "H100-SXM")


def test_unknown_model_names_the_field_and_the_known_names(tmp_path, capsys):
    code, _, err = run_dry(tmp_path, capsys, BASE.replace("Qwen/Qwen3-0.6B", "Qwen3-14B-Instruct"))
    assert_one_line(code, err, "models[0]", "'Qwen3-14B-Instruct'", "Qwen/Qwen3-8B")


def test_unknown_scenario_and_parameter_names(tmp_path, capsys):
    code, _, err = run_dry(tmp_path, capsys, BASE.replace("native-offload", "native-ofload"))
    assert_one_line(code, err, "scenarios", "'native-ofload'", "native-offload")
    text = BASE + "scenario_params: {num_cpu_blokcs: [10]}\n"
    code, _, err = run_dry(tmp_path, capsys, text)
    assert_one_line(code, err, "scenario_params.num_cpu_blokcs", "num_cpu_blocks")


def test_a_misspelt_key_is_reported_before_the_missing_one(tmp_path, capsys):
    code, _, err = run_dry(tmp_path, capsys, BASE.replace("prefix_tokens:", "prefix_tokes:"))
    assert_one_line(code, err, "workload.prefix_tokes", "unknown key", "'prefix_tokens'")


def test_blocks_beyond_the_gpu_memory_fail_at_load(tmp_path, capsys):
    text = BASE.replace(
        "hardware: H100-SXM}", "hardware: H100-SXM, num_gpu_blocks_override: 2000000000}"
    )
    code, _, err = run_dry(tmp_path, capsys, text)
    assert_one_line(code, err, "--num-gpu-blocks-override", "memory of 1 x H100-SXM")
    # the same through a swept engine param
    text = BASE + "scenario_params: {num_gpu_blocks_override: [3000, 2000000000]}\n"
    code, _, err = run_dry(tmp_path, capsys, text)
    assert_one_line(code, err, "--num-gpu-blocks-override")


def test_a_swept_engine_param_keeps_the_target_fields_bounds(tmp_path, capsys):
    code, _, err = run_dry(tmp_path, capsys, BASE + "scenario_params: {engines: [1, 1.0e+12]}\n")
    assert_one_line(code, err, "scenario_params.engines[1]", "less than or equal to 64")


def test_a_bad_extra_arg_fails_at_load(tmp_path, capsys):
    text = BASE.replace("hardware: H100-SXM}", "hardware: H100-SXM, extra_args: [--no-such-flag]}")
    code, _, err = run_dry(tmp_path, capsys, text)
    assert_one_line(code, err, "--no-such-flag")


def test_non_utf8_spec_is_one_line(tmp_path, capsys):
    code, _, err = run_dry(tmp_path, capsys, b"name: caf\xe9\n")
    assert_one_line(code, err, "spec.yaml", "not UTF-8")


def test_an_alias_bomb_is_refused_quickly(tmp_path, capsys):
    # ~700 bytes that expand to 10^9 nodes: each level holds ten references to the one before
    lines = ['  a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"  a{level}: &a{level} [{refs}]")
    bomb = BASE + "scenario_params:\n" + "\n".join(lines) + "\n  num_cpu_blocks: *a8\n"
    started = time.perf_counter()
    code, _, err = run_dry(tmp_path, capsys, bomb)
    assert time.perf_counter() - started < 30  # refused from its text, never expanded
    assert_one_line(code, err, "expands to more than")


def test_a_recursive_alias_is_one_line(tmp_path, capsys):
    code, _, err = run_dry(tmp_path, capsys, "name: &n [*n]\n")
    assert_one_line(code, err, "recursive YAML alias")


def _replay_spec(tmp_path, token_ids: list[int]) -> str:
    path = tmp_path / "conv.jsonl"
    line = {"turns": [{"prompt_token_ids": token_ids, "output_tokens": 4}]}
    path.write_text(json.dumps(line) + "\n")
    return BASE.replace(
        BASE[BASE.index("workload:") : BASE.index("load:")],
        f"workload: {{kind: replay, path: {path}}}\n",
    )


@pytest.mark.parametrize("token_id", [-5, 10**12, 2**64 - 1, 151936])
def test_replay_token_ids_outside_the_vocabulary_fail_at_load(tmp_path, capsys, token_id):
    code, _, err = run_dry(tmp_path, capsys, _replay_spec(tmp_path, [1, token_id]))
    assert_one_line(code, err, "conv.jsonl:1", "prompt_token_ids")


def test_replay_token_ids_inside_the_vocabulary_pass(tmp_path, capsys):
    code, _, err = run_dry(tmp_path, capsys, _replay_spec(tmp_path, [0, 151935]))
    assert code == 0, err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["emulate", "serve", "Qwen/Qwen3-0.6B", "--num-gpu-blocks-override", "100000000000"],
            "--num-gpu-blocks-override",
        ),
        (
            ["emulate", "serve", "Qwen/Qwen3-0.6B", "--num-gpu-blocks-override", "2000000000"],
            "memory of 1 x H100-SXM",
        ),
        (["emulate", "serve", "Qwen/Qwen3-0.6B", "--max-num-seqs", "10000000"], "--max-num-seqs"),
        (["emulate", "serve", "Qwen/Qwen3-0.6B", "--block-size", "7"], "--block-size"),
        (["emulate", "serve", "Qwen/Qwen3-0.6B", "--hardware", "L4"], "unknown hardware 'L4'"),
        (
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
            "--refresh-metrics-interval",
        ),
        (
            [
                "emulate",
                "router",
                "--config",
                "x.yaml",
                "--endpoint",
                "http://127.0.0.1:1",
                "--port",
                "70000",
            ],
            "--port",
        ),
    ],
)
def test_cli_flags_past_their_bounds_are_one_line(capsys, argv, expected):
    code = main(argv)
    assert_one_line(code, capsys.readouterr().err, expected)
