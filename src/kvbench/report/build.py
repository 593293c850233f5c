"""`kvbench report RUN_DIR --format md,csv,png,html,json,br`: compile the analysis and write the report dir.

Deterministic: the bootstrap RNG is seeded from the run's spec seed (0 when absent), so rebuilding a
report from the same run directory gives the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kvbench.analysis import br_export
from kvbench.analysis.guidance import build_findings, deployment_guidance
from kvbench.analysis.hits import hit_splits, split_table
from kvbench.analysis.latency import latency_comparisons, latency_table
from kvbench.analysis.latency_guidance import latency_findings, latency_guidance
from kvbench.analysis.load import RunData, load_run
from kvbench.analysis.metrics import complete_metrics
from kvbench.analysis.peaks import find_peaks, level_summary, ok_metrics, peak_table
from kvbench.analysis.routing import (
    endpoint_table,
    prediction_table,
    router_scorers,
    routing_sentence,
)
from kvbench.analysis.server import server_row
from kvbench.analysis.twins import downgrade, failed_models, twin_checks, twin_deltas
from kvbench.analysis.validity import Thresholds, run_checks
from kvbench.errors import UserError
from kvbench.report import figures, figures_latency, figures_server
from kvbench.report.data import ReportData
from kvbench.report.html import write_html
from kvbench.report.markdown import render
from kvbench.report.run_facts import reproduce_command, write_spec_snapshot
from kvbench.results.layout import REPORT_DIR

FORMATS = ("md", "csv", "png", "html", "json", "br")
DEFAULT_FORMATS = ("md", "csv", "png", "html", "json")  # what `kvbench run` / `report` write


def build_report(run_dir: Path, formats: list[str], thresholds: Thresholds = Thresholds()) -> Path:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(
            f"--format: unknown format(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(FORMATS)}"
        )
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    run = load_run(run_dir)
    report_dir = run_dir / REPORT_DIR
    report_dir.mkdir(parents=True, exist_ok=True)
    data = compile_report(run, thresholds)
    data.reproduce = reproduce_command(run, write_spec_snapshot(run, report_dir))
    if "csv" in formats:
        write_csvs(data, report_dir)
    if "png" in formats or "html" in formats:
        data.figures = draw_figures(data, report_dir)
    else:
        data.figures = [figures.Skipped("all figures", "png format not requested")]
    if "br" in formats:
        br_export.export_run(run, report_dir / "br")
        data.outputs.append("br")
    if "json" in formats:
        from kvbench.report.answer import key_finding_sentences
        from kvbench.report.summary_json import build_summary

        summary = build_summary(data, key_finding_sentences(data))
        (report_dir / "summary.json").write_text(summary.model_dump_json(indent=2) + "\n")
        data.outputs.append("json")
    text = render(data)
    if "md" in formats:
        (report_dir / "REPORT.md").write_text(text)
    if "html" in formats:
        write_html(text, report_dir, f"kvbench report: {run.manifest.run_name}")
    return report_dir


def compile_report(run: RunData, thresholds: Thresholds = Thresholds()) -> ReportData:
    seed = run.manifest.spec.get("seed", 0) if isinstance(run.manifest.spec, dict) else 0
    rng = np.random.default_rng(int(seed) if isinstance(seed, int) else 0)
    metrics = complete_metrics(run)
    peaks = find_peaks(run, metrics, rng)
    latency = latency_comparisons(run, peaks, rng)
    twins = twin_deltas(run, peaks, rng)
    aa_checks = twin_checks(run, twins)
    latency = downgrade(peaks, latency, failed_models(aa_checks))  # before any verdict is written
    checks = aa_checks + run_checks(run, peaks, thresholds)
    server_peak = pd.DataFrame([server_row(cell) for p in peaks for cell in p.cells])
    splits = hit_splits(run, latency)
    findings = build_findings(run, peaks, checks, twins)
    endpoints, predictions = endpoint_table(peaks), prediction_table(peaks)
    sentences = [
        s for p in peaks if (s := routing_sentence(endpoints, predictions, p.model, p.scenario))
    ]
    scorers = {
        f"{p.model}|{p.scenario}": s
        for p in peaks
        if (s := router_scorers(run.run_dir, p.model, p.scenario))
    }
    return ReportData(
        run=run,
        metrics=metrics,
        level_summary=level_summary(metrics),
        peaks=peaks,
        server_peak=_first_repeat(server_peak),
        checks=checks,
        findings=findings + latency_findings(latency, run.baseline, splits),
        guidance=deployment_guidance(run, peaks, checks)
        + latency_guidance(latency, peaks, run.baseline),
        thresholds=thresholds,
        outputs=[],
        latency=latency,
        routing_endpoints=endpoints,
        routing_predictions=predictions,
        routing_sentences=sentences,
        router_scorers=scorers,
        hit_splits=splits,
        twins=twins,
    )


def _first_repeat(server_peak: pd.DataFrame) -> pd.DataFrame:
    if server_peak.empty:
        return pd.DataFrame(columns=["has_server_metrics"])
    return (
        server_peak.sort_values("repeat", kind="stable")
        .drop_duplicates(["model", "scenario"])
        .reset_index(drop=True)
    )


def write_csvs(data: ReportData, report_dir: Path) -> None:
    data.metrics.to_csv(report_dir / "complete_metrics.csv", index=False)
    data.level_summary.to_csv(report_dir / "summary_by_level.csv", index=False)
    peak_table(data.peaks, data.run.baseline).to_csv(
        report_dir / "peak_throughput_all.csv", index=False
    )
    latency_table(data.latency).to_csv(report_dir / "latency_deltas.csv", index=False)
    split_table(data.hit_splits).to_csv(report_dir / "ttft_hits_misses.csv", index=False)
    data.routing_endpoints.to_csv(report_dir / "routing_endpoints.csv", index=False)
    data.routing_predictions.to_csv(report_dir / "routing_predictions.csv", index=False)
    all_peak_rows = pd.DataFrame([server_row(cell) for p in data.peaks for cell in p.cells])
    all_peak_rows.to_csv(report_dir / "pcp_metrics_peak.csv", index=False)
    scenario_summary(data, all_peak_rows).to_csv(report_dir / "pcp_summary_stats.csv", index=False)
    pd.DataFrame(
        [
            {
                "check": c.name,
                "status": c.status.value,
                "subject": c.subject,
                "evidence": c.evidence,
            }
            for c in data.checks
        ]
    ).to_csv(report_dir / "validity_checks.csv", index=False)


def scenario_summary(data: ReportData, server_rows: pd.DataFrame) -> pd.DataFrame:
    """Per scenario, averages over models of the peak cells (the seed's pcp_summary_stats table)."""
    peaks = pd.DataFrame(
        [
            {"model": p.model, "scenario": p.scenario, "peak_output_tok_s": p.throughput.mean}
            for p in data.peaks
        ]
    )
    if peaks.empty:
        return pd.DataFrame()
    out = peaks.groupby("scenario", sort=False).agg(
        models=("model", "nunique"), avg_peak_output_tok_s=("peak_output_tok_s", "mean")
    )
    if not server_rows.empty:
        cols = [
            "gpu_utilization_pct",
            "kv_usage_mean_pct",
            "running_mean",
            "waiting_mean",
            "prefix_hit_rate_pct",
            "cpu_hit_share_pct",
            "process_rss_mean_gb",
        ]
        out = out.join(server_rows.groupby("scenario")[cols].mean().add_prefix("avg_"))
    return out.reset_index()


def correlation_frame(data: ReportData) -> pd.DataFrame:
    ok = ok_metrics(data.metrics)
    if ok.empty:
        return ok
    cells = {c.cell_id: c for c in data.run.cells}
    server = pd.DataFrame([server_row(cells[cid]) for cid in ok["cell_id"]])
    if server.empty:
        return ok
    return ok.merge(server.drop(columns=["model", "scenario", "level", "repeat"]), on="cell_id")


def draw_figures(data: ReportData, report_dir: Path) -> list:
    scenarios = data.run.scenarios()
    drawn: list = [figures.peak_throughput_bars(data.peaks, scenarios, report_dir)]
    drawn += figures.throughput_curves(data.metrics, scenarios, report_dir)
    drawn += [
        figures.latency_comparison(data.peaks, data.metrics, scenarios, report_dir),
        figures.delta_heatmap(data.peaks, data.run.baseline, report_dir),
        figures_server.kv_usage(data.peaks, scenarios, report_dir),
        figures_server.request_queues(data.server_peak, data.peaks, report_dir),
        figures_server.prefix_hits(data.server_peak, report_dir),
        figures_server.memory_usage(data.peaks, scenarios, report_dir),
        figures_server.correlation_heatmap(correlation_frame(data), report_dir),
        figures.ttft_by_turn(data.peaks, scenarios, report_dir),
        figures.ttft_by_reused_prefix(data.peaks, scenarios, report_dir),
        figures_latency.ttft_by_reuse_distance(data.peaks, scenarios, report_dir),
        figures_latency.ttft_delta_heatmap(data.latency, report_dir),
    ]
    return drawn
