"""Spec validation as `kvbench run` reports it, plus matrix expansion (cells.py)."""

import textwrap

import pytest

from kvbench.errors import UserError
from kvbench.experiment.cells import expand_cells
from kvbench.spec.experiment import load_spec

BASE = """
name: t
models: [Qwen/Qwen3-0.6B, Qwen/Qwen3-8B]
scenarios: [no-offload, native-offload]
target: {kind: endpoint, url: "http://127.0.0.1:1"}
workload: {kind: synthetic, prompt_tokens: 256, output_tokens: 128, requests: 10}
load: {strategy: concurrent, levels: [1, 4], requests_per_level: 10}
"""


def spec_from(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return load_spec(path)


@pytest.mark.parametrize(
    "mutation, expected",
    [
        (
            ("output_tokens: 128", "output_tokens: {kind: normal, mean: 5, min: 10, max: 2}"),
            "workload.output_tokens: Value error, min (10) is greater than max (2)",
        ),
        (
            ("output_tokens: 128", "output_tokens: 0"),
            "workload.output_tokens: Input should be greater than 0",
        ),
        (
            ("levels: [1, 4]", "levels: [1.5]"),
            "load: Value error, concurrent levels are numbers of streams",
        ),
        (
            ("requests_per_level: 10", "duration_s: -1"),
            "load.duration_s: Input should be greater than 0",
        ),
        (("name: t", "name: t\nrepeats: 0"), "repeats: Input should be greater than 0"),
    ],
)
def test_impossible_numbers_name_the_field(tmp_path, mutation, expected):
    with pytest.raises(UserError) as err:
        spec_from(tmp_path, BASE.replace(*mutation))
    assert f"spec.yaml: {expected}" in str(err.value) and "\n" not in str(err.value)


def test_cells_are_the_full_product_in_model_scenario_repeat_level_order(tmp_path):
    spec = spec_from(tmp_path, BASE.replace("name: t", "name: t\nrepeats: 2"))
    ids = [p.cell_id for p in expand_cells(spec)]
    assert len(ids) == 2 * 2 * 2 * 2
    assert ids[:4] == [
        "Qwen3-0.6B__no-offload__1__r0",
        "Qwen3-0.6B__no-offload__4__r0",
        "Qwen3-0.6B__no-offload__1__r1",
        "Qwen3-0.6B__no-offload__4__r1",
    ]


def test_scenario_params_become_labelled_variants(tmp_path):
    spec = spec_from(
        tmp_path,
        BASE.replace("name: t", "name: t\nscenario_params: {num_cpu_blocks: [10000, 20000]}"),
    )
    plans = expand_cells(spec, ["model=Qwen3-8B", "scenario=native-offload", "level=4"])
    assert [p.scenario for p in plans] == [
        "native-offload+num_cpu_blocks=10000",
        "native-offload+num_cpu_blocks=20000",
    ]
    assert plans[1].scenario_params == {"num_cpu_blocks": 20000}
    assert plans[1].cell_id == "Qwen3-8B__native-offload-num_cpu_blocks-20000__4__r0"


def test_sweep_levels_are_steps(tmp_path):
    spec = spec_from(
        tmp_path,
        BASE.replace("strategy: concurrent, levels: [1, 4]", "strategy: sweep, sweep_size: 4"),
    )
    plans = expand_cells(spec, ["model=Qwen3-8B", "scenario=no-offload"])
    assert [(p.level, p.strategy) for p in plans] == [
        (1.0, "synchronous"),
        (2.0, "throughput"),
        (3.0, "constant"),
        (4.0, "constant"),
    ]


@pytest.mark.parametrize(
    "only, expected",
    [
        (["colour=red"], "--only 'colour=red': unknown key 'colour'"),
        (["level"], "--only 'level': expected KEY=VALUE"),
        (["level=x"], "--only 'level=x': level must be a number"),
        (["model=none"], "--only model=none: matches no cell"),
    ],
)
def test_bad_only_filters(tmp_path, only, expected):
    with pytest.raises(UserError, match=None) as err:
        expand_cells(spec_from(tmp_path, BASE), only)
    assert expected in str(err.value)
