"""docs/spec.md and docs/summary-json.md are the generated references, field for field."""

from pathlib import Path

import pytest
import yaml

from kvbench.spec import experiment as E
from kvbench.spec.reference import (
    NOTES,
    WORKLOAD_EXAMPLES,
    meaning,
    spec_models,
    spec_reference_markdown,
    summary_reference_markdown,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_docs_spec_md_is_the_generated_reference():
    assert (DOCS / "spec.md").read_text() == spec_reference_markdown(), (
        "docs/spec.md is stale: kvbench spec --reference > docs/spec.md"
    )


def test_docs_summary_json_md_is_the_generated_reference():
    assert (DOCS / "summary-json.md").read_text() == summary_reference_markdown(), (
        "docs/summary-json.md is stale: kvbench spec --summary-reference > docs/summary-json.md"
    )


def test_every_spec_field_has_a_meaning_and_every_note_names_a_field():
    missing = [
        f"{m.__name__}.{name}"
        for m in spec_models()
        for name in m.model_fields
        if not meaning(m, name)
    ]
    assert missing == []
    fields = {f"{m.__name__}.{name}" for m in spec_models() for name in m.model_fields}
    assert sorted(set(NOTES) - fields) == []


def test_every_workload_kind_has_an_example_that_validates():
    kinds = {
        m.model_fields["kind"].annotation.__args__[0]
        for m in (E.MultiTurnSharedPrefix, E.Synthetic, E.SharedPrefixGroups, E.Replay)
    }
    assert set(WORKLOAD_EXAMPLES) == kinds
    for kind, text in WORKLOAD_EXAMPLES.items():
        spec = E.ExperimentSpec.model_validate(
            {
                "name": "example",
                "models": ["Qwen/Qwen3-8B"],
                "target": {"kind": "emulated"},
                "load": {"duration_s": 10},
                **yaml.safe_load(text),
            }
        )
        assert spec.workload.kind == kind


def test_reference_states_units_defaults_and_bounds():
    text = spec_reference_markdown()
    assert "| `duration_s` | float or null | null | > 0, <= 604800 | s |" in text
    assert "| `name` | str | required |" in text
    assert "| `stagger_s` |" in text and "lock-step" in text


def test_summary_reference_documents_every_summary_field():
    from kvbench.report import summary_json as S

    text = summary_reference_markdown()
    for model in (S.ReportSummary, S.ScenarioVerdict, S.CellJson, S.DeltaJson):
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"{model.__name__}.{name}"


@pytest.mark.parametrize("flag", ["--reference", "--summary-reference"])
def test_spec_command_prints_the_reference(flag, capsys):
    from kvbench.cli import main

    assert main(["spec", flag]) == 0
    expected = spec_reference_markdown() if flag == "--reference" else summary_reference_markdown()
    assert capsys.readouterr().out == expected
