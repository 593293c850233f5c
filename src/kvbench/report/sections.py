"""REPORT.md sections for latency deltas and the routing view (rendered from analysis results)."""

from __future__ import annotations

import math

import pandas as pd

from kvbench.analysis.hits import HIT_SHARE_OF_PROMPT, HitSplit
from kvbench.analysis.latency import LATENCY_STATS, LatencyComparison, select
from kvbench.analysis.stats import INDICATIVE_MEANING

# Verdict strings as in latency_deltas.csv; only "no significant difference" is abbreviated (n.s.).
VERDICT_MARK = {
    "lower": "**lower**",
    "higher": "**higher**",
    "indicative lower": "*indicative lower*",
    "indicative higher": "*indicative higher*",
    "no significant difference": "n.s.",
    "unknown": "no interval",
}


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return lines + ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]


def _cell(c: LatencyComparison, baseline: str) -> str:
    value = "n/a" if math.isnan(c.value_ms) else f"{c.value_ms:.1f}"
    if c.scenario == baseline:
        return value
    return f"{value} ({c.delta.text()}, {VERDICT_MARK.get(c.verdict, c.verdict)})"


def _latency_rows(
    comparisons: list[LatencyComparison], baseline: str, with_level: bool
) -> list[list[str]]:
    rows = []
    for model in dict.fromkeys(c.model for c in comparisons):
        for scenario in dict.fromkeys(c.scenario for c in comparisons if c.model == model):
            by_stat = {c.stat: c for c in select(comparisons, model=model, scenario=scenario)}
            first = next(iter(by_stat.values()))
            row = [first.model_short, scenario] + ([f"{first.level:g}"] if with_level else [])
            rows.append(
                row
                + [
                    _cell(by_stat[s.key], baseline) if s.key in by_stat else "n/a"
                    for s in LATENCY_STATS
                ]
            )
    return rows


def latency_section(comparisons: list[LatencyComparison], baseline: str) -> list[str]:
    lines = ["## Latency vs baseline", ""]
    if not comparisons:
        return lines + ["No latency comparison: the baseline has no successful cell."]
    stats = [f"{s.label} ms" for s in LATENCY_STATS]
    lines += [
        "Each cell: the statistic in ms (mean over repeats), then its delta vs "
        f"`{baseline}` [95 % CI] and the verdict (lower is better; n.s. = the interval contains 0, no "
        f"significant difference; *indicative* = {INDICATIVE_MEANING}, or downgraded by a failed A/A check). "
        "The guidance rule uses the TTFT mean; the p50 is context (TTFT is bimodal: prefix hit vs miss). "
        "Data: `latency_deltas.csv` (columns `verdict`, `evidence`).",
        "",
    ]
    common = select(comparisons, basis="common")
    for level in sorted({c.level for c in common}):
        at_level = [c for c in common if c.level == level]
        models = ", ".join(dict.fromkeys(c.model_short for c in at_level))
        lines += [
            f"### Latency at level {level:g}",
            "",
            f"The same load level for every scenario ({models}): the fair latency comparison, since latency "
            "rises with load.",
            "",
        ]
        lines += _table(["Model", "Scenario"] + stats, _latency_rows(at_level, baseline, False)) + [
            ""
        ]
    peak = select(comparisons, basis="peak")
    same = {(c.model, c.scenario, c.level, c.base_level) for c in peak} <= {
        (c.model, c.scenario, c.level, c.base_level) for c in common
    }
    if peak and same:
        lines += [
            "Every scenario peaked at the common level, so the latency at each scenario's peak is the table above."
        ]
    elif peak:
        lines += [
            "### Latency at each scenario's peak",
            "",
            "Each scenario at its own peak-throughput level against the baseline at its peak (levels may differ).",
            "",
        ]
        lines += _table(["Model", "Scenario", "Level"] + stats, _latency_rows(peak, baseline, True))
    return lines


def hit_split_section(splits: list[HitSplit], baseline: str) -> list[str]:
    lines = ["### TTFT of prefix hits vs misses", ""]
    if not splits:
        return lines + ["No split: no latency comparison."]
    lines += [
        f"Same cells as the table above (common level, repeats pooled). **Hit request** = a request "
        f"whose cached tokens cover >= {HIT_SHARE_OF_PROMPT:.0%} of its prompt; **hit share %** = hit "
        "requests / requests with known cached tokens; requests without reported cached tokens are 'unknown'. A "
        "TTFT change comes from more hits (share), faster hits or faster misses. Data: `ttft_hits_misses.csv`.",
        "",
    ]
    rows = [
        [
            s.model.split("/")[-1],
            s.scenario + (" (baseline)" if s.scenario == baseline else ""),
            f"{s.level:g}",
            str(s.hits),
            str(s.misses),
            str(s.unknown),
            _pct(s.hit_share * 100),
            _ms(s.hit_ttft_mean_ms),
            _ms(s.miss_ttft_mean_ms),
        ]
        for s in splits
    ]
    return lines + _table(
        [
            "Model",
            "Scenario",
            "Level",
            "Hits",
            "Misses",
            "Unknown",
            "Hit share %",
            "Hit TTFT mean ms",
            "Miss TTFT mean ms",
        ],
        rows,
    )


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def routing_section(
    endpoints: pd.DataFrame,
    predictions: pd.DataFrame,
    sentences: list[str],
    scorers: dict[str, str],
) -> list[str]:
    lines = ["## Routing", ""]
    if endpoints.empty:
        return lines + ["No per-request endpoint recorded: no routing view."]
    lines += [
        "Peak cells, successful measure-phase requests. **Cached-token share %** = cached tokens / "
        "prompt tokens of the requests an engine served (engines are named `engine-N`; their "
        "addresses per cell are in the Cells table). Data: `routing_endpoints.csv`, "
        "`routing_predictions.csv`.",
        "",
    ]
    lines += [f"- {s}" for s in sentences] + [""]
    rows = [
        [
            r.model.split("/")[-1],
            r.scenario,
            f"{r.level:g}",
            r.endpoint,
            str(r.requests),
            f"{r.request_share_pct:.0f}",
            "n/a" if math.isnan(r.hit_rate_pct) else f"{r.hit_rate_pct:.1f}",
        ]
        for r in endpoints.itertuples()
    ]
    lines += _table(
        [
            "Model",
            "Scenario",
            "Level",
            "Engine",
            "Requests",
            "Request share %",
            "Cached-token share %",
        ],
        rows,
    )
    if not predictions.empty:
        lines += [
            "",
            "Router predictions vs cached tokens reported by the engines (per request: matched = "
            "min(predicted, cached); 'share of hits' = matched / cached; 'realised' = matched / predicted).",
            "",
        ]
        rows = [
            [
                r.model.split("/")[-1],
                r.scenario,
                scorers.get(f"{r.model}|{r.scenario}", "n/a"),
                f"{r.predicted_hit_tokens:.0f}",
                f"{r.cached_tokens:.0f}",
                _pct(r.predicted_share_of_hits_pct),
                _pct(r.predictions_realised_pct),
                str(r.requests_predicted_but_missed),
            ]
            for r in predictions.itertuples()
        ]
        lines += _table(
            [
                "Model",
                "Scenario",
                "Scorers (weight)",
                "Predicted hit tok",
                "Cached tok",
                "Share of hits %",
                "Realised %",
                "Predicted, got 0",
            ],
            rows,
        )
    return lines


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0f}"
