"""`kvbench quickstart`: the bundled quickstart experiment, then its report.

Runs spec/catalog/experiments/quickstart.yaml (all seven scenarios, 2 engines, a working set larger
than the GPU KV cache; 3 repeats x 3 load levels on the simulated target, in virtual time) or, with
`live`, quickstart-live.yaml (one repeat, one level, on the real-time emulated stack over HTTP) into
`out` (default ./kvbench-runs/quickstart-<UTC time>), builds the report (md, csv, png, html,
json) and prints where it is plus its answer and key findings. Returns the run's exit code (0 ok, 1 some cell failed,
130 interrupted).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from kvbench.spec.scenarios import resolve_experiment

SUMMARY_SECTIONS = ("## Answer", "## Key findings")


def default_out_dir(now: datetime) -> Path:
    return Path("kvbench-runs") / f"quickstart-{now.strftime('%Y%m%d-%H%M%S')}"


def report_summary(report_md: str) -> list[str]:
    """The opening of the report: the answer's verdict tables and recommendations, and the key
    findings (section titles, table rows, bullets and the 'Recommended configuration' lines)."""
    lines, keep = [], False
    for line in report_md.splitlines():
        if line.startswith("## "):
            keep = line.strip() in SUMMARY_SECTIONS
            if keep:
                lines.append(line[3:])
            continue
        if keep and line.startswith(("|", "- ", "**Recommended", "### ")):
            lines.append(line)
    return lines


def run_quickstart(out: Path | None, live: bool = False) -> int:
    from kvbench.experiment.runner import run_experiment_cli

    run_dir = Path(out) if out else default_out_dir(datetime.now(UTC))
    how = (
        "the real-time emulated stack (1 repeat, 1 level)"
        if live
        else "the simulated stack, in virtual time (3 repeats x 3 levels)"
    )
    print(f"kvbench quickstart: 7 scenarios on {how} -> {run_dir}", flush=True)
    spec_path = resolve_experiment("quickstart-live" if live else "quickstart")
    code = run_experiment_cli(spec_path, run_dir, report=False)
    if code == 130:
        return code
    from kvbench.report.build import DEFAULT_FORMATS, build_report

    report_dir = Path(build_report(run_dir, list(DEFAULT_FORMATS)))
    report_md = report_dir / "REPORT.md"
    print(f"\nrun:    {run_dir}\nreport: {report_md}\nhtml:   {report_dir / 'REPORT.html'}")
    if report_md.is_file():
        for line in report_summary(report_md.read_text()):
            print(line)
    print(
        f"\nnext: open {report_md}; the experiment is {spec_path} (copy it, change it, `kvbench run` it)"
    )
    return code
