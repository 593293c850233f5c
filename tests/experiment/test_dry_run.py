"""`kvbench run --dry-run` prints the plan and each scenario's configuration, and starts/writes nothing."""

import io
import textwrap

import yaml
from rich.console import Console

from kvbench.experiment.runner import run_experiment_cli

SPEC = """
name: dry
models: [Qwen/Qwen3-8B]
scenarios: [no-offload, native-offload]
scenario_params: {{num_cpu_blocks: [10000, 20000]}}
target: {target}
workload: {{kind: synthetic, prompt_tokens: 256, output_tokens: 16, requests: 10}}
load: {{levels: [1, 4], requests_per_level: 5}}
"""


def dry_run(tmp_path, target: str) -> str:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(textwrap.dedent(SPEC.format(target=target)))
    buffer = io.StringIO()
    rc = run_experiment_cli(
        spec_path,
        tmp_path / "run",
        dry_run=True,
        console=Console(file=buffer, width=200, color_system=None),
    )
    assert rc == 0
    assert not (tmp_path / "run").exists()
    return buffer.getvalue()


def test_dry_run_lists_every_cell_and_the_rendered_offload_config(tmp_path):
    text = dry_run(tmp_path, "{kind: emulated}")
    cells = [line for line in text.splitlines() if line.startswith("cell ")]
    # no-offload does not use num_cpu_blocks, so it is not repeated per CPU size:
    # (no-offload + native-offload x 2 CPU sizes) x 2 levels
    assert len(cells) == (1 + 2) * 2
    assert "cell Qwen3-8B__no-offload__4__r0 " in text
    assert "cell Qwen3-8B__native-offload-num_cpu_blocks-20000__4__r0 " in text
    assert '"num_cpu_blocks":20000' in text and '"kv_connector":"OffloadingConnector"' in text


def test_k8s_dry_run_prints_the_manifests(tmp_path):
    text = dry_run(tmp_path, "{kind: k8s, dry_run: true}")
    section = text.split("## Qwen/Qwen3-8B / native-offload+num_cpu_blocks=10000")[1].split(
        "\n## "
    )[0]
    objects = [doc for doc in yaml.safe_load_all(section) if isinstance(doc, dict)]
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == ["ConfigMap", "Deployment"]
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
    args = " ".join(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert '"num_cpu_blocks":10000' in args


def test_a_k8s_spec_with_dry_run_true_is_a_dry_run_of_the_whole_matrix(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(textwrap.dedent(SPEC.format(target="{kind: k8s, dry_run: true}")))
    buffer = io.StringIO()
    assert (
        run_experiment_cli(spec_path, tmp_path / "run", console=Console(file=buffer, width=200))
        == 0
    )
    assert not (tmp_path / "run").exists()
    assert (
        buffer.getvalue().count("kind: Deployment") >= 3
    )  # one model server per (model, scenario variant)
