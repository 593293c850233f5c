import textwrap

import pytest

from kvbench.errors import UserError
from kvbench.spec.experiment import load_spec

BASE = """
name: t
models: [Qwen/Qwen3-0.6B]
target: {kind: endpoint, url: "http://127.0.0.1:1"}
workload: {kind: synthetic, prompt_tokens: 256, output_tokens: 128, requests: 10}
load: {strategy: concurrent, levels: [1, 4], requests_per_level: 10}
"""


def write(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_spec_loads(tmp_path):
    spec = load_spec(write(tmp_path, BASE))
    assert spec.workload.kind == "synthetic"
    assert spec.load.levels == [1.0, 4.0]


@pytest.mark.parametrize(
    "mutation, expected",
    [
        (("name: t", "name: t\nbogus_key: 1"), "bogus_key"),
        (("requests: 10}", "requests: 0}"), "workload.requests"),
        (("kind: synthetic", "kind: nonsense"), "workload"),
        (("levels: [1, 4]", "levels: [-1]"), "load.levels.0"),
    ],
)
def test_bad_spec_names_the_field(tmp_path, mutation, expected):
    text = BASE.replace(*mutation)
    with pytest.raises(UserError) as err:
        load_spec(write(tmp_path, text))
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_invalid_yaml_is_one_line(tmp_path):
    with pytest.raises(UserError) as err:
        load_spec(write(tmp_path, "name: [unclosed\n"))
    assert "invalid YAML" in str(err.value) and "\n" not in str(err.value)
