"""REPORT.md, in reading order: the answer first (verdict table and recommended configuration per
model), key findings, what was run, validity checks; then throughput, latency, prefix hits, Redis
vs Valkey, routing and server metrics, each with its figures beside its text; per-model details,
detailed findings and guidance, limitations, methodology and the reproduce command."""

from __future__ import annotations

from collections import Counter

from kvbench.analysis.guidance import CONFIRM_REPEATS, EQUIVALENCE_MARGIN_PCT
from kvbench.analysis.hits import HIT_SHARE_OF_PROMPT
from kvbench.analysis.metrics import TPOT_DEFINITION
from kvbench.analysis.peaks import fmt_tok_s
from kvbench.analysis.stats import (
    CONFIDENCE,
    EVIDENCE_PAIRED,
    EVIDENCE_SINGLE,
    INDICATIVE_MEANING,
    MIN_PAIRS_FOR_BOOTSTRAP_ONLY,
    N_BOOT,
)
from kvbench.analysis.twins import builtin_twin_pairs
from kvbench.report.answer import answer_section, key_findings
from kvbench.report.closing import limitations_section, redis_valkey_section, reproduce_section
from kvbench.report.data import ReportData
from kvbench.report.figure_text import figure_block, figure_blocks
from kvbench.report.sections import hit_split_section, latency_section, routing_section
from kvbench.report.setup_section import setup_section
from kvbench.report.tables import md_table as _table
from kvbench.report.tables import num as _num
from kvbench.report.validity_section import validity_section

__all__ = ["ReportData", "render"]

THROUGHPUT_RULE = (
    "Throughput = output tokens of successful measure-phase requests / measure-window seconds "
    "(the same number in every output of kvbench)."
)


def render(data: ReportData) -> str:
    sections = [
        _header(data),
        answer_section(data),
        key_findings(data),
        setup_section(data),
        validity_section(data),
        _peak_section(data),
        latency_section(data.latency, data.run.baseline) + _latency_figures(data),
        hit_split_section(data.hit_splits, data.run.baseline),
        redis_valkey_section(data),
        routing_section(
            data.routing_endpoints,
            data.routing_predictions,
            data.routing_sentences,
            data.router_scorers,
        ),
        _server_section(data),
        _details(data),
        _findings(data),
        limitations_section(data),
        _methodology(data),
        reproduce_section(data),
    ]
    return "\n\n".join("\n".join(s) for s in sections) + "\n"


def _latency_figures(data: ReportData) -> list[str]:
    names = (
        "latency_comparison_all.png",
        "ttft_delta_heatmap.png",
        "ttft_by_turn.png",
        "ttft_by_reused_prefix.png",
        "ttft_by_reuse_distance.png",
    )
    return [""] + [line for name in names for line in figure_block(data, name)]


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
    cells = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    return [
        f"# kvbench report: {m.run_name}",
        "",
        f"**System under test:** {sut.description} (kind `{sut.kind}`). **{nature}.**",
        "",
        *_emulation_notes(sut.details),
        f"- Run `{m.run_name}`: {len(data.run.cells)} cells ({cells}); models "
        f"{', '.join(m_.split('/')[-1] for m_ in data.run.models()) or 'none'}; baseline "
        f"`{data.run.baseline}`; started {m.created_at}, finished "
        f"{m.finished_at or 'not recorded (interrupted?)'}; kvbench {m.kvbench_version}.",
    ]


def _single_repeat(data: ReportData) -> bool:
    return any(
        p.delta.evidence == EVIDENCE_SINGLE for p in data.peaks if p.scenario != data.run.baseline
    )


def _findings(data: ReportData) -> list[str]:
    lines = ["## Findings in detail", ""]
    lines += [f"- *{f.rule}*: {f.text}" for f in data.findings] or [
        "- No findings: no successful cell."
    ]
    lines += [
        "",
        "## Deployment guidance in detail",
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
        f"`{data.run.baseline}` at its own peak [{pct} % CI]. {THROUGHPUT_RULE} "
        "Data: `peak_throughput_all.csv`.",
        "",
    ]
    if not rows:
        return lines + ["No successful cell."] + [""] + _throughput_figures(data)
    table = _table(
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
    return lines + table + [""] + _throughput_figures(data)


def _throughput_figures(data: ReportData) -> list[str]:
    return (
        figure_block(data, "peak_throughput_all_scenarios.png")
        + figure_blocks(data, "throughput_curve_")
        + figure_blocks(data, "throughput_bars_")
        + figure_block(data, "performance_delta_heatmap_all.png")
    )


def _server_section(data: ReportData) -> list[str]:
    lines = ["## Server metrics at peak", ""]
    rows_df = data.server_peak
    if rows_df.empty or not rows_df["has_server_metrics"].any():
        return (
            lines
            + [
                "No server metrics in this run (e.g. an imported GuideLLM run): server-side checks "
                "were skipped.",
                "",
            ]
            + _server_figures(data)
        )
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
        "Means over the measure window of the first repeat at each peak (all repeats in "
        "`pcp_metrics_peak.csv`). Columns: KV % = GPU KV-cache usage (`vllm:kv_cache_usage_perc`); "
        "**Prefix-cache hit %** = the engines' own counters, hit tokens / queried tokens "
        "(`vllm:prefix_cache_hits` / `vllm:prefix_cache_queries`), over every lookup including "
        "recomputed blocks, so it differs from the per-request hit share above; **CPU / remote "
        "share %** = share of hit tokens served by that tier (per-request tier tokens where "
        "reported, else `vllm:prompt_tokens_cached_by_source`); GPU→CPU / CPU→GPU MB = bytes the "
        "offload connector moved.",
        "",
    ]
    table = _table(
        [
            "Model",
            "Scenario",
            "Level",
            "KV mean %",
            "KV max %",
            "Running",
            "Waiting",
            "Prefix-cache hit %",
            "CPU share %",
            "Remote share %",
            "GPU→CPU MB",
            "CPU→GPU MB",
            "RSS GB",
            "GPU util %",
        ],
        rows,
    )
    return lines + table + [""] + _server_figures(data)


def _server_figures(data: ReportData) -> list[str]:
    names = (
        "pcp_kv_cache_usage.png",
        "pcp_request_queues.png",
        "pcp_prefix_cache_hits.png",
        "pcp_memory_usage.png",
        "pcp_correlation_heatmap.png",
    )
    return [line for name in names for line in figure_block(data, name)]


def _details(data: ReportData) -> list[str]:
    lines = ["## Per-model details", ""]
    summary = data.level_summary
    if summary.empty:
        return lines + ["No successful cell."] + _cell_table(data)
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
    return lines + _cell_table(data)


def _cell_table(data: ReportData) -> list[str]:
    """Every cell with its status, measure window and the engines' addresses in that cell."""
    rows = []
    for cell in data.run.cells:
        info = cell.info
        window = (
            f"{info.measure_end_s - info.measure_start_s:.1f}"
            if info.measure_start_s is not None and info.measure_end_s is not None
            else "n/a"
        )
        engines = ", ".join(
            f"{name} {url.removesuffix('/metrics')}"
            for name, url in sorted(info.sources.items())
            if name.startswith("engine")
        )
        rows.append([info.cell_id, info.status.value, window, engines or "n/a", info.error or ""])
    if not rows:
        return []
    return (
        [
            "### Cells",
            "",
            "Engines are named `engine-N` everywhere; their addresses changed per cell:",
            "",
        ]
        + _table(["Cell", "Status", "Window s", "Engines", "Error"], rows)
        + [""]
    )


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
