"""End-of-run summary table: scenario and level as their own columns, readable at 80 columns."""

from __future__ import annotations

from rich.console import Console

from kvbench.loadgen.progress import SummaryRow, render_summary_table

SCENARIOS = (
    "no-offload",
    "native-offload",
    "lmcache-local",
    "lmcache-redis",
    "lmcache-valkey",
    "llm-d-redis",
    "llm-d-valkey",
)


def _row(model, scenario, level, repeat=0, status="ok", ttft=563.9):
    return SummaryRow(
        f"{model.split('/')[-1]}__{scenario}__{level:g}__r{repeat}",
        6.4,
        204.8,
        ttft,
        1872.8,
        25.42,
        0,
        model=model,
        scenario=scenario,
        level=level,
        repeat=repeat,
        status=status,
    )


def _render(rows, width=80) -> list[str]:
    console = Console(record=True, width=width)
    console.print(render_summary_table(rows))
    return console.export_text().splitlines()


def test_quickstart_rows_show_each_scenario_uncut_at_80_columns():
    rows = [_row("Qwen/Qwen3-8B", s, 8) for s in SCENARIOS]
    lines = _render(rows)
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert "…" not in text
    for scenario in SCENARIOS:  # each row starts with its own scenario, not the shared model name
        assert any(line.lstrip("│┃ ").startswith(scenario + " ") for line in lines), scenario
    assert "Qwen3-8B" not in text  # one model: no model column
    assert "rep" not in text  # one repeat: no repeat column
    assert " 564 " in text and " 1873 " in text and " 205 " in text and "25.42" in text


def test_model_and_repeat_columns_appear_only_when_they_vary_and_failed_cells_say_so():
    rows = [
        _row("Qwen/Qwen3-8B", "no-offload", 8, 0),
        _row("meta/Llama-3.1-8B", "no-offload", 16, 1, status="failed"),
    ]
    lines = _render(rows)
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 80
    assert (
        "model" in text
        and "Qwen3-8B" in text
        and "Llama-3.1-8B" in text
        and "level" in text
        and "rep" in text
    )
    assert "(failed)" in text and "16 r1" in text and " 1873 " in text


def test_long_scenario_label_wraps_instead_of_being_cut():
    label = "native-offload@num_cpu_blocks=20000"
    lines = _render([_row("Qwen/Qwen3-8B", label, 8)])
    assert max(len(line) for line in lines) <= 80
    assert "…" not in "\n".join(lines)
    assert label.replace("@", "").replace("=", "")[:10] in "".join(
        line.replace(" ", "") for line in lines
    ).replace("@", "")


def test_rows_without_scenario_fall_back_to_the_cell_id():
    row = SummaryRow("cell-a", 1.0, 5.0, 20.0, None, 2.5, 1)
    text = "\n".join(_render([row], width=120))
    assert "cell-a" in text and "scenario" not in text and "-" in text
