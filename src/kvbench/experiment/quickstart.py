"""`kvbench quickstart`: the bundled quickstart experiment on the emulated stack, then its report.

Runs spec/catalog/experiments/quickstart.yaml (all seven scenarios, 2 emulated engines, a working set
larger than the GPU KV cache) into `out` (default ./kvbench-runs/quickstart-<UTC time>), builds the
report (md, csv, png) and prints where it is plus its peak table and guidance. Returns the run's exit
code (0 ok, 1 some cell failed, 130 interrupted).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from kvbench.spec.scenarios import resolve_experiment

REPORT_FORMATS = ["md", "csv", "png"]
SUMMARY_SECTIONS = ("## Peak throughput", "## Deployment guidance")


def default_out_dir(now: datetime) -> Path:
    return Path("kvbench-runs") / f"quickstart-{now.strftime('%Y%m%d-%H%M%S')}"


def report_summary(report_md: str) -> list[str]:
    """The table rows and bullets of the report's peak-throughput and guidance sections."""
    lines, keep = [], False
    for line in report_md.splitlines():
        if line.startswith("## "):
            keep = line.strip() in SUMMARY_SECTIONS
            if keep:
                lines.append(line[3:])
            continue
        if keep and line.startswith(("|", "- ")):
            lines.append(line)
    return lines


def run_quickstart(out: Path | None) -> int:
    from kvbench.experiment.runner import run_experiment_cli

    run_dir = Path(out) if out else default_out_dir(datetime.now(UTC))
    print(f"kvbench quickstart: 7 scenarios on an emulated stack -> {run_dir}", flush=True)
    spec_path = resolve_experiment("quickstart")
    code = run_experiment_cli(spec_path, run_dir)
    if code == 130:
        return code
    try:
        from kvbench.report.build import build_report
    except ImportError as err:
        print(f"report: skipped ({err}); the run is in {run_dir}")
        return code
    report_dir = Path(build_report(run_dir, REPORT_FORMATS))
    report_md = report_dir / "REPORT.md"
    print(f"\nrun:    {run_dir}\nreport: {report_md}")
    if report_md.is_file():
        for line in report_summary(report_md.read_text()):
            print(line)
    print(
        f"\nnext: open {report_md}; the experiment is {spec_path} (copy it, change it, `kvbench run` it)"
    )
    return code
