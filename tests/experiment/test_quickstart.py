"""`kvbench quickstart` end to end: the bundled experiment, then the report.

`kvbench quickstart --live` is the suite's one long test (about 1.5-2 minutes on 2 cores): the
real-time emulated stack over HTTP, all seven scenarios. The default quickstart (simulated, 3 repeats
x 3 levels) runs exactly what a new user runs first."""

import json

import psutil

from kvbench.cli import main
from kvbench.experiment.quickstart import report_summary

REPORT = """# kvbench report: quickstart
**System under test:** ...
## Answer
### Qwen3-8B
| Scenario | Peak |
|---|---|
| no-offload (baseline) | 176.0 |
**Recommended configuration: no-offload**: no scenario gained.
Verdicts: ...
## Key findings
- Qwen3-8B: no scenario changed peak output throughput significantly.
## What was run
- not this
"""


def test_report_summary_keeps_the_answer_and_the_key_findings():
    assert report_summary(REPORT) == [
        "Answer",
        "### Qwen3-8B",
        "| Scenario | Peak |",
        "|---|---|",
        "| no-offload (baseline) | 176.0 |",
        "**Recommended configuration: no-offload**: no scenario gained.",
        "Key findings",
        "- Qwen3-8B: no scenario changed peak output throughput significantly.",
    ]


def test_quickstart_live_runs_all_seven_scenarios_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--live", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        f"report: {out / 'report' / 'REPORT.md'}" in printed
        and "Recommended configuration" in printed
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["system_under_test"]["kind"] == "emulated"
    assert [c["status"] for c in manifest["cells"]] == ["ok"] * 7
    assert {c["scenario"] for c in manifest["cells"]} == {
        "no-offload",
        "native-offload",
        "lmcache-local",
        "lmcache-redis",
        "lmcache-valkey",
        "llm-d-redis",
        "llm-d-valkey",
    }
    assert (out / "report" / "REPORT.md").is_file() and list((out / "report").glob("*.png"))
    # offload had something to do: the offload cells got CPU-tier hits
    cells = {
        c["scenario"]: json.loads((out / "cells" / c["cell_id"] / "cell.json").read_text())
        for c in manifest["cells"]
    }
    cached = {name: cell["summary"]["cached_prompt_fraction"] for name, cell in cells.items()}
    for offload in ("native-offload", "lmcache-local", "lmcache-redis", "lmcache-valkey"):
        assert cached[offload] > cached["no-offload"], cached
    children = [
        p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE
    ]
    assert children == []


def test_quickstart_on_the_simulated_stack_repeats_and_recommends(tmp_path, capsys):
    out = tmp_path / "qs-sim"
    assert main(["quickstart", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["system_under_test"]["kind"] == "simulated"
    cells = manifest["cells"]
    assert len(cells) == 7 * 3 * 3 and {c["status"] for c in cells} == {"ok"}
    assert {c["repeat"] for c in cells} == {0, 1, 2} and len({c["level"] for c in cells}) == 3
    report = (out / "report" / "REPORT.md").read_text()
    assert "SIMULATED" in report.splitlines()[2]
    guidance = report.split("## Deployment guidance", 1)[1].split("\n## ", 1)[0]
    assert "use **" in guidance  # firm (paired-repeats) evidence for a recommendation
    assert "A/A twin check** (Qwen3-8B): ok" in report
    assert "Recommended configuration: " in printed and "Key findings" in printed
