"""REPORT.md: header (system under test first), validity checks, findings and guidance, peak table,
figures, server metrics, per-model details, methodology."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kvbench.analysis.check_names import AA_TWINS_AGREE as AA_CHECK
from kvbench.analysis.guidance import CONFIRM_REPEATS, EQUIVALENCE_MARGIN_PCT, Finding
from kvbench.analysis.hits import HIT_SHARE_OF_PROMPT, HitSplit
from kvbench.analysis.latency import LatencyComparison
from kvbench.analysis.load import RunData
from kvbench.analysis.metrics import TPOT_DEFINITION
from kvbench.analysis.peaks import Peak, fmt_tok_s
from kvbench.analysis.stats import (
    CONFIDENCE,
    EVIDENCE_PAIRED,
    EVIDENCE_SINGLE,
    INDICATIVE_MEANING,
    MIN_PAIRS_FOR_BOOTSTRAP_ONLY,
    N_BOOT,
)
from kvbench.analysis.twins import builtin_twin_pairs
from kvbench.analysis.validity import Check, CheckStatus, Thresholds
from kvbench.report.figures import Skipped
from kvbench.report.sections import hit_split_section, latency_section, routing_section

FIGURE_CAPTIONS = {
    "peak_throughput_all_scenarios.png": "Peak output throughput per model and scenario",
    "latency_comparison_all.png": "TTFT and TPOT at each scenario's peak",
    "performance_delta_heatmap_all.png": "Peak-throughput delta vs baseline (n.s. = not significant)",
    "pcp_kv_cache_usage.png": "GPU KV-cache usage over the peak cells",
    "pcp_request_queues.png": "Running and waiting requests at peak",
    "pcp_prefix_cache_hits.png": "Prefix-cache hit rate and tier shares at peak",
    "pcp_memory_usage.png": "Server process memory over the peak cells",
    "pcp_correlation_heatmap.png": "Correlation between server metrics and performance",
    "ttft_by_turn.png": "TTFT by conversation turn",
    "ttft_by_reused_prefix.png": "TTFT by reused-prefix length",
    "ttft_delta_heatmap.png": "TTFT delta vs baseline at the common load level (n.s. = not significant)",
    "ttft_by_reuse_distance.png": "TTFT by reuse distance (seconds since the reused prefix was last sent)",
}


@dataclass
class ReportData:
    run: RunData
    metrics: pd.DataFrame
    level_summary: pd.DataFrame
    peaks: list[Peak]
    server_peak: pd.DataFrame
    checks: list[Check]
    findings: list[Finding]
    guidance: list[Finding]
    thresholds: Thresholds
    figures: list[Path | Skipped] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # other files written (CSV, BR)
    latency: list[LatencyComparison] = field(default_factory=list)
    routing_endpoints: pd.DataFrame = field(default_factory=pd.DataFrame)
    routing_predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    routing_sentences: list[str] = field(default_factory=list)
    router_scorers: dict[str, str] = field(
        default_factory=dict
    )  # "model|scenario" -> scorers with weights
    hit_splits: list[HitSplit] = field(default_factory=list)


def _num(value, fmt: str = "{:.1f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return fmt.format(value)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return lines


def render(data: ReportData) -> str:
    sections = [
        _header(data),
        _validity(data),
        _findings(data),
        _peak_section(data),
        latency_section(data.latency, data.run.baseline),
        hit_split_section(data.hit_splits, data.run.baseline),
        _figures(data),
        routing_section(
            data.routing_endpoints,
            data.routing_predictions,
            data.routing_sentences,
            data.router_scorers,
        ),
        _server_section(data),
        _details(data),
        _methodology(data),
    ]
    return "\n\n".join("\n".join(s) for s in sections) + "\n"


def _emulation_notes(details: dict) -> list[str]:
    """What the emulated stack simplifies, stated where the numbers are read."""
    scale = details.get("lmcache_remote_payload_scale")
    if not scale or scale >= 1:
        return []
    return [
        f"- LMCache remote tier: keys, existence, eviction and round trips in the real Redis / Valkey store "
        f"are real; the bytes written are scaled to 1/{round(1 / scale):,} of the true KV size, while transfer "
        "time is costed from the true bytes.",
        "",
    ]


def _header(data: ReportData) -> list[str]:
    m = data.run.manifest
    sut = m.system_under_test
    if sut.kind == "simulated":
        nature = (
            "SIMULATED: every number below comes from a discrete-event simulation of kvbench's emulator "
            "and cost model (times are simulated seconds), not from measurements of real hardware"
        )
    elif sut.emulated:
        nature = (
            "EMULATED: every number below comes from kvbench's emulator and cost model, not from "
            "measurements of real hardware"
        )
    elif sut.kind == "guidellm-import":
        target = sut.details.get("target") or "an unknown target"
        nature = f"imported from GuideLLM: GuideLLM's measurements of {target}"
    else:
        nature = "measured on the system described"
    statuses = Counter(c.info.status.value for c in data.run.cells)
    return [
        f"# kvbench report: {m.run_name}",
        "",
        f"**System under test:** {sut.description} (kind `{sut.kind}`). **{nature}.**",
        "",
        *_emulation_notes(sut.details),
        f"- Run: `{m.run_name}`, started {m.created_at}, finished {m.finished_at or 'not recorded (interrupted?)'}",
        f"- Cells: {len(data.run.cells)} in total, "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())),
        f"- Models: {', '.join(data.run.models()) or 'none'}; scenarios: {', '.join(data.run.scenarios()) or 'none'}",
        f"- Baseline scenario: `{data.run.baseline}`; load strategy `{m.strategy}` "
        f"(level = {'concurrent streams' if m.strategy == 'concurrent' else 'requests per second'})",
        f"- kvbench {m.kvbench_version}",
    ]


def _validity(data: ReportData) -> list[str]:
    lines = (
        ["## Validity checks", ""]
        + _aa_lines(data.checks)
        + [
            "",
            "Checks on whether this run could show a difference at all. FLAG rows qualify every number below.",
        ]
    )
    flags = [
        c for c in data.checks if c.status == CheckStatus.FLAG and c.name != AA_CHECK
    ]  # A/A: shown above
    if flags:
        lines += [""] + _table(["check", "subject", "evidence"], _flag_rows(flags))
    else:
        lines += ["", "No check flagged a problem."]
    by_name: dict[str, Counter] = {}
    for c in data.checks:
        by_name.setdefault(c.name, Counter())[c.status.value] += 1
    lines += ["", "Summary per check:"]
    for name, counts in by_name.items():
        lines.append(f"- {name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    skipped = {c.name: c.evidence for c in data.checks if c.status == CheckStatus.SKIP}
    for name, why in skipped.items():
        lines.append(f'  - {name} skipped where data was absent, e.g. "{why}"')
    return lines


FLAG_ROWS_PER_CHECK = (
    3  # beyond this, one summary row per check; every row is in validity_checks.csv
)


def _flag_rows(flags: list[Check]) -> list[list[str]]:
    """The first flags of each check in full, then one row counting the rest, so a large matrix
    (the seed evaluation has 224 cells) keeps its validity section readable."""
    rows: list[list[str]] = []
    shown: Counter[str] = Counter()
    for check in flags:
        shown[check.name] += 1
        if shown[check.name] <= FLAG_ROWS_PER_CHECK:
            rows.append([f"**FLAG** {check.name}", check.subject, check.evidence])
    for name, count in shown.items():
        if count > FLAG_ROWS_PER_CHECK:
            rest = count - FLAG_ROWS_PER_CHECK
            rows.append(
                [
                    f"**FLAG** {name}",
                    f"{rest} more",
                    f"the same check flagged {rest} more subjects: see `validity_checks.csv`",
                ]
            )
    return rows


def _aa_lines(checks: list[Check]) -> list[str]:
    """The A/A twin check first: it says whether the intervals below can be trusted at all."""
    aa = [c for c in checks if c.name == AA_CHECK]
    lines = []
    for c in aa:
        mark = {CheckStatus.FLAG: "**FLAG**", CheckStatus.OK: "ok", CheckStatus.SKIP: "skipped"}[
            c.status
        ]
        subject = "" if c.subject == "run" else f" ({c.subject.split('/')[-1]})"
        lines.append(f"- **A/A twin check**{subject}: {mark}: {c.evidence}.")
    return lines


def _single_repeat(data: ReportData) -> bool:
    return any(
        p.delta.evidence == EVIDENCE_SINGLE for p in data.peaks if p.scenario != data.run.baseline
    )


def _findings(data: ReportData) -> list[str]:
    lines = ["## Findings", ""]
    lines += [f"- *{f.rule}*: {f.text}" for f in data.findings] or [
        "- No findings: no successful cell."
    ]
    lines += [
        "",
        "## Deployment guidance",
        "",
        "Rules: for throughput, recommend a scenario only for a significant throughput gain at its peak; "
        "for latency, only for a significant reduction of the TTFT **mean** at the common load level without "
        "a significant TPOT or E2E increase (the mean, not the p50: TTFT is bimodal, prefix hit vs miss, and "
        "its p50 jumps between the two modes; the p50 is shown as context). Evidence rule: a significant "
        f"delta counts only on `{EVIDENCE_PAIRED}` evidence (at least two aligned repeats per side); with one "
        f"repeat per side (`{EVIDENCE_SINGLE}`) it is '{INDICATIVE_MEANING}', its verdict reads 'indicative "
        f"...', and the guidance keeps the baseline and says 'confirm with repeats: {CONFIRM_REPEATS}'. "
        "If the A/A twin check failed for a model, every significant verdict of that model is indicative. "
        "Otherwise keep the baseline. These statements hold for the system under test named at the top.",
    ]
    if _single_repeat(data):
        lines += [
            "",
            f"**This run has one repeat per scenario: every verdict below is at most indicative.** "
            f"Run it again with `repeats: {CONFIRM_REPEATS}` to measure run-to-run variance.",
        ]
    lines += [""]
    lines += [f"- {g.text}" for g in data.guidance] or ["- None: no successful cell."]
    return lines


def _peak_section(data: ReportData) -> list[str]:
    pct = int(CONFIDENCE * 100)
    rows = []
    for p in data.peaks:
        is_base = p.scenario == data.run.baseline
        rows.append(
            [
                p.model_short,
                p.scenario,
                fmt_tok_s(p.throughput),
                f"{p.level:g}",
                str(p.throughput.n),
                "—" if is_base else p.delta.text(),
                "baseline" if is_base else p.delta.verdict,
                "" if is_base else p.delta.evidence,
            ]
        )
    lines = [
        "## Peak throughput",
        "",
        f"Output tok/s at each scenario's best load level: mean over repeats [{pct} % CI]; delta vs "
        f"`{data.run.baseline}` at its own peak [{pct} % CI]. Data: `peak_throughput_all.csv`.",
        "",
    ]
    return lines + (
        _table(
            [
                "Model",
                "Scenario",
                "Peak tok/s",
                "Level",
                "Repeats",
                "vs baseline",
                "Verdict",
                "Evidence",
            ],
            rows,
        )
        if rows
        else ["No successful cell."]
    )


def _figures(data: ReportData) -> list[str]:
    lines = ["## Figures", ""]
    for item in data.figures:
        if isinstance(item, Skipped):
            continue
        caption = (
            FIGURE_CAPTIONS.get(item.name)
            or f"Throughput vs load: {item.stem.replace('throughput_curve_', '').replace('_all', '')}"
        )
        lines += [f"![{caption}]({item.name})", f"*{caption}*", ""]
    skipped = [f for f in data.figures if isinstance(f, Skipped)]
    if skipped:
        lines += ["Figures not drawn:"] + [f"- `{s.name}`: {s.reason}" for s in skipped]
    return lines


def _server_section(data: ReportData) -> list[str]:
    lines = ["## Server metrics at peak", ""]
    rows_df = data.server_peak
    if rows_df.empty or not rows_df["has_server_metrics"].any():
        return lines + [
            "No server metrics in this run (e.g. an imported GuideLLM run): server-side checks were skipped."
        ]
    rows = [
        [
            r.model.split("/")[-1],
            r.scenario,
            f"{r.level:g}",
            _num(r.kv_usage_mean_pct, "{:.2f}"),
            _num(r.kv_usage_max_pct, "{:.2f}"),
            _num(r.running_mean),
            _num(r.waiting_mean),
            _num(r.prefix_hit_rate_pct),
            _num(r.cpu_hit_share_pct),
            _num(r.remote_hit_share_pct),
            _num(r.offload_gpu_to_cpu_bytes / 1e6),
            _num(r.offload_cpu_to_gpu_bytes / 1e6),
            _num(r.process_rss_mean_gb, "{:.2f}"),
            _num(r.gpu_utilization_pct),
        ]
        for r in rows_df.itertuples()
    ]
    lines += [
        "Means over the measure window of the first repeat at each peak (all repeats in `pcp_metrics_peak.csv`). "
        "Hit rate from counter increases; tier shares from per-request tier tokens where reported, else "
        "`vllm:prompt_tokens_cached_by_source`.",
        "",
    ]
    return lines + _table(
        [
            "Model",
            "Scenario",
            "Level",
            "KV mean %",
            "KV max %",
            "Running",
            "Waiting",
            "Hit %",
            "CPU share %",
            "Remote share %",
            "GPU→CPU MB",
            "CPU→GPU MB",
            "RSS GB",
            "GPU util %",
        ],
        rows,
    )


def _details(data: ReportData) -> list[str]:
    lines = ["## Per-model details", ""]
    summary = data.level_summary
    if summary.empty:
        return lines + ["No successful cell."]
    for model, group in summary.groupby("model"):
        rows = [
            [
                r.scenario,
                f"{r.level:g}",
                str(r.repeats),
                f"{_num(r.output_tok_s_mean)} [{_num(r.output_tok_s_ci_low)}, {_num(r.output_tok_s_ci_high)}]",
                _num(r.request_rate_rps_mean, "{:.2f}"),
                _num(r.ttft_p50_ms_mean),
                _num(r.ttft_p99_ms_mean),
                _num(r.tpot_p50_ms_mean, "{:.2f}"),
            ]
            for r in group.sort_values(["scenario", "level"]).itertuples()
        ]
        lines += (
            [f"### {model}", ""]
            + _table(
                [
                    "Scenario",
                    "Level",
                    "Repeats",
                    "Output tok/s [95 % CI]",
                    "req/s",
                    "TTFT p50 ms",
                    "TTFT p99 ms",
                    "TPOT p50 ms",
                ],
                rows,
            )
            + [""]
        )
    return lines


def _methodology(data: ReportData) -> list[str]:
    methods = sorted(
        {
            p.delta.method
            for p in data.peaks
            if p.scenario != data.run.baseline and p.delta.method != "none"
        }
        | {c.delta.method for c in data.latency if c.delta.method != "none"}
    )
    th = data.thresholds
    return [
        "## Methodology",
        "",
        "- Only measure-phase requests count (warm-up, priming and cool-down excluded). Throughput = output tokens "
        "of successful measure-phase requests / measure-window seconds.",
        "- TTFT = first token received - request sent. "
        + TPOT_DEFINITION
        + ". ITL = gaps between token arrivals "
        "pooled over requests. E2E = last token - request sent. Percentiles: linear interpolation (numpy).",
        f"- Repeats: mean and two-sided {int(CONFIDENCE * 100)} % t-interval over repeats.",
        f"- Deltas vs baseline ({N_BOOT} bootstrap resamples, percentile interval, seeded RNG): paired by repeat "
        f"index where at least two repeats align (same seed per repeat across scenarios); with fewer than "
        f"{MIN_PAIRS_FOR_BOOTSTRAP_ONLY} pairs the interval is widened to include the paired t-interval. With a "
        "single repeat, each cell's requests are grouped by completion time into 10 slices of the window and "
        "resampled. A delta whose interval contains 0 is reported as 'no significant difference'.",
        f"- Evidence (column `evidence` in the CSVs): `{EVIDENCE_PAIRED}` (paired by repeat) or `{EVIDENCE_SINGLE}` "
        "(one cell per side: the interval covers sampling within the cell only, not the variation between runs, "
        "which one repeat cannot measure). A significant verdict on single-run evidence reads 'indicative gain / "
        f"loss / lower / higher' ({INDICATIVE_MEANING}) in the CSVs and here alike; the guidance never recommends "
        "on it.",
        "- A/A twin check: twin scenarios that differ only in a store that should not matter ("
        + ", ".join(f"{a} / {b}" for a, b in builtin_twin_pairs())
        + ") are compared with the same methods (peak "
        "throughput; TTFT mean and p50 at the highest level both ran). A significant twin difference means the "
        "intervals understate run-to-run variance: the check FLAGs the model and all its significant verdicts "
        "become 'indicative'.",
        f"- Prefix hit = a request whose reported cached tokens cover >= {HIT_SHARE_OF_PROMPT:.0%} of its prompt; "
        "the TTFT-mean shift vs the baseline is split exactly into a mix part (hit share change at the "
        "baseline's hit and miss TTFT) and hit-speed and miss-speed parts.",
        "- Latency deltas (TTFT mean and p50, TPOT p50, E2E p50) use the same rule: paired by repeat where at least "
        "two repeats align, else one cell per side with a cluster bootstrap that resamples whole conversations "
        "(all passes of a recycled conversation together), not single requests: turns of one conversation share "
        "their cache history, so requests are not independent draws. Lower is better. 'Common level' = the "
        "highest load level at which every scenario of the model has a successful cell.",
        "- Methods used in this report: "
        + ("; ".join(methods) if methods else "none (no deltas)")
        + ".",
        f"- Redis vs Valkey are called equivalent only if the whole interval lies within +-{EQUIVALENCE_MARGIN_PCT:g} %.",
        f"- Validity thresholds: client lag p99 > {th.client_lag_p99_ms:g} ms or client CPU >= {th.client_cpu_pct:g} %; "
        f"engine step lag p99 > {th.engine_step_lag_p99_ms:g} ms; max KV usage < {th.kv_usage_max_pct:g} % = no memory "
        f"pressure; < {th.min_ok_requests} ok requests; error rate > {th.max_error_rate:.0%}. Cold start: a first-turn "
        f"request's cached tokens beyond {th.first_turn_slack_tokens} tokens must be explained by requests of the same "
        "cell sent before it was served (its group's shared prefix, or an earlier pass of the same conversation).",
        "- Files: `complete_metrics.csv` (every cell), `summary_by_level.csv` (means and CIs over repeats), "
        "`peak_throughput_all.csv`, `latency_deltas.csv`, `ttft_hits_misses.csv`, `routing_endpoints.csv`, `routing_predictions.csv`, "
        "`pcp_metrics_peak.csv`, `pcp_summary_stats.csv`, `validity_checks.csv`"
        + ("; Benchmark Report v0.2 per cell in `br/`" if "br" in data.outputs else "")
        + ".",
    ]
