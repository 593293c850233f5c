"""The runner rejects unknown scenarios / knobs before it starts anything (no run directory made)."""

import textwrap

import pytest

from kvbench.errors import UserError
from kvbench.experiment.runner import run_experiment_cli

SPEC = """
name: t
models: [Qwen/Qwen3-0.6B]
scenarios: [no-offload, {scenario}]
scenario_params: {params}
target: {{kind: emulated}}
workload: {{kind: synthetic, prompt_tokens: 256, output_tokens: 16, requests: 10}}
load: {{levels: [1], requests_per_level: 5}}
"""


@pytest.mark.parametrize(
    "scenario, params, expected",
    [
        ("nope-offload", "{}", "unknown scenario 'nope-offload'"),
        ("native-offload", "{num_cpu_blockz: [10]}", "scenario_params.num_cpu_blockz"),
    ],
)
def test_unknown_scenario_or_param_fails_before_anything_starts(
    tmp_path, scenario, params, expected
):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(textwrap.dedent(SPEC.format(scenario=scenario, params=params)))
    out = tmp_path / "run"
    with pytest.raises(UserError, match=expected):
        run_experiment_cli(spec_path, out)
    assert not out.exists()
