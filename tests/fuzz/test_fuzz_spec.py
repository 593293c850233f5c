"""Fuzz: random specs never crash kvbench. Each one either loads or is a one-line UserError naming
where it is wrong; through the CLI (`run --dry-run`) the exit code is 0 or 2, never a traceback.

Bounded: a fixed number of examples (derandomized, so the default suite is deterministic) and the
file's pytest timeout.
"""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import VALUES, mutated

from kvbench.cli import main
from kvbench.errors import UserError
from kvbench.spec.checks import check_spec
from kvbench.spec.experiment import parse_spec

EMULATED = {
    "name": "fz",
    "models": ["Qwen/Qwen3-0.6B"],
    "scenarios": ["no-offload", "native-offload"],
    "scenario_params": {"num_cpu_blocks": [1000, 2000]},
    "target": {"kind": "emulated", "hardware": "H100-SXM", "engines": 2, "block_size": 16},
    "workload": {
        "kind": "multi_turn_shared_prefix",
        "prefix_tokens": 64,
        "prefix_count": 2,
        "turns": 2,
        "prompt_tokens": {"kind": "normal", "mean": 16, "stdev": 4, "min": 1, "max": 64},
        "output_tokens": 8,
        "conversations": 4,
        "working_set": {"capacity": "gpu", "factor": 1.5},
    },
    "load": {"strategy": "concurrent", "levels": [1, 2], "requests_per_level": 8, "warmup_s": 0},
    "repeats": 1,
    "cache": {"reset": True, "prime": False, "verify": True},
}
ENDPOINT = {
    "name": "fz-endpoint",
    "seed": 3,
    "models": ["any/model"],
    "target": {"kind": "endpoint", "url": "http://127.0.0.1:1", "metrics_urls": []},
    "workload": {"kind": "synthetic", "prompt_tokens": 256, "output_tokens": 128, "requests": 10},
    "load": {"strategy": "poisson", "levels": [0.5, 2.0], "duration_s": 10, "api": "chat"},
}
K8S = {
    "name": "fz-k8s",
    "models": ["Qwen/Qwen3-8B"],
    "scenarios": ["llm-d-redis"],
    "target": {"kind": "k8s", "dry_run": True, "gateway_url": "http://127.0.0.1:1", "engines": 2},
    "workload": {
        "kind": "shared_prefix_groups",
        "num_groups": 2,
        "system_prompt_len": 100,
        "question_len": 10,
        "output_len": 5,
        "num_prompts_per_group": 3,
    },
    "load": {"strategy": "sweep", "sweep_size": 4, "duration_s": 5},
}
BASES = [EMULATED, ENDPOINT, K8S]
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # capsys: read (and so emptied) in every example
    ],
)


def load_or_user_error(data) -> None:
    """The in-process contract: a spec loads, or raises one UserError of one line."""
    try:
        spec = parse_spec(data, "fuzz.yaml")
        check_spec(spec, "fuzz.yaml")
    except UserError as err:
        message = str(err)
        assert message.startswith("fuzz.yaml"), message
        assert "\n" not in message and "Traceback" not in message


def test_the_bases_are_valid():
    for base in BASES:
        check_spec(parse_spec(copy.deepcopy(base), "base"), "base")


@FUZZ
@given(st.sampled_from(range(len(BASES))).flatmap(lambda i: mutated(BASES[i])))
def test_mutated_specs_load_or_fail_in_one_line(data):
    load_or_user_error(data)


@FUZZ
@given(VALUES)
def test_arbitrary_documents_fail_in_one_line(data):
    load_or_user_error(data)


def _cli_dry_run(tmp_path, content: bytes, capsys) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    code = main(["run", str(path), "--dry-run"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 2), err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


@settings(FUZZ, max_examples=40)
@given(mutated(EMULATED))
def test_mutated_specs_through_the_cli(tmp_path_factory, capsys, data):
    text = yaml.safe_dump(data, allow_unicode=True).encode("utf-8", "surrogatepass")
    _cli_dry_run(tmp_path_factory.mktemp("spec"), text, capsys)


@settings(FUZZ, max_examples=60)
@given(st.binary(max_size=300))
def test_random_bytes_as_a_spec_file(tmp_path_factory, capsys, content):
    _cli_dry_run(tmp_path_factory.mktemp("bytes"), content, capsys)
