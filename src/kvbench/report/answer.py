"""The report's opening: per model a verdict table across scenarios and the recommended
configuration, then key findings in plain sentences.

Rules (the same as the guidance, analysis/guidance.py and latency_guidance.py):
- recommended = the largest firm (paired-repeats, A/A ok) peak-throughput gain; else the largest
  firm TTFT-mean reduction without a significant TPOT / E2E increase; else the baseline;
- a sentence says "raises / lowers X by N %" with the unsigned size after the verb and the signed
  delta with its interval in parentheses (analysis/phrases.py), and counts agree with their nouns.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvbench.analysis.latency import LatencyComparison, select
from kvbench.analysis.latency_guidance import RULE_STAT, best_ttft_reduction
from kvbench.analysis.peaks import fmt_tok_s
from kvbench.analysis.phrases import change_phrase, count_phrase, join_names
from kvbench.analysis.stats import EVIDENCE_SINGLE
from kvbench.analysis.validity import CheckStatus
from kvbench.report.data import ReportData
from kvbench.report.run_facts import ScenarioSetup, setups
from kvbench.report.tables import md_table

VERDICT_MARK = {
    "gain": "**gain**",
    "loss": "**loss**",
    "lower": "**lower**",
    "higher": "**higher**",
    "indicative gain": "*indicative gain*",
    "indicative loss": "*indicative loss*",
    "indicative lower": "*indicative lower*",
    "indicative higher": "*indicative higher*",
    "no significant difference": "n.s.",
    "unknown": "no interval",
}


@dataclass(frozen=True)
class Recommendation:
    model: str
    scenario: str
    basis: str  # "throughput" | "latency" | "baseline"
    reason: str


def recommend(data: ReportData, model: str) -> Recommendation:
    baseline = data.run.baseline
    mine = [p for p in data.peaks if p.model == model]
    gains = sorted((p for p in mine if p.delta.verdict == "gain"), key=lambda p: -p.delta.delta_pct)
    if gains:
        best = gains[0]
        return Recommendation(
            model,
            best.scenario,
            "throughput",
            f"it {change_phrase(best.delta, 'peak output throughput')} vs {baseline} on "
            "paired repeats",
        )
    common = [
        c for c in select(data.latency, model=model, basis="common") if c.scenario != baseline
    ]
    faster = best_ttft_reduction(common, "lower")
    if faster is not None:
        return Recommendation(
            model,
            faster.scenario,
            "latency",
            f"it {change_phrase(faster.delta, 'the TTFT mean')} at level {faster.level:g} "
            "without a significant TPOT or E2E increase; peak throughput did not gain significantly",
        )
    indicative = [p for p in mine if p.delta.indicative] + [
        c for c in common if c.stat == RULE_STAT and c.delta.indicative
    ]
    reason = "no scenario gained peak throughput or lowered the TTFT mean on firm evidence"
    if indicative:
        reason += (
            f" ({count_phrase(len(indicative), 'indicative result')} rest on one repeat per side "
            "or a failed A/A check: confirm with `repeats: 3`)"
        )
    return Recommendation(model, baseline, "baseline", reason)


def _ttft(data: ReportData, model: str, scenario: str) -> LatencyComparison | None:
    rows = select(data.latency, model=model, scenario=scenario, stat=RULE_STAT, basis="common")
    return rows[0] if rows else None


def _verdict_rows(data: ReportData, model: str) -> list[list[str]]:
    rows = []
    for peak in (p for p in data.peaks if p.model == model):
        is_base = peak.scenario == data.run.baseline
        ttft = _ttft(data, model, peak.scenario)
        ttft_value = "n/a" if ttft is None else f"{ttft.value_ms:.1f}"
        rows.append(
            [
                peak.scenario + (" (baseline)" if is_base else ""),
                fmt_tok_s(peak.throughput),
                "—" if is_base else peak.delta.text(),
                "—" if is_base else VERDICT_MARK.get(peak.delta.verdict, peak.delta.verdict),
                ttft_value,
                "—" if is_base or ttft is None else ttft.delta.text(),
                "—" if is_base or ttft is None else VERDICT_MARK.get(ttft.verdict, ttft.verdict),
                "—" if is_base else peak.delta.evidence,
            ]
        )
    return rows


def _config_line(setup: ScenarioSetup | None) -> str:
    if setup is None:
        return ""
    params = ", ".join(
        f"{k}={v}" for k, v in sorted(setup.scenario_params.items()) if v is not None
    )
    return (
        f" Engine: `{setup.engine_command}`" + (f"; parameters: {params}" if params else "") + "."
    )


def answer_section(data: ReportData) -> list[str]:
    baseline = data.run.baseline
    lines = ["## Answer", ""]
    if not data.peaks:
        return lines + ["No successful cell: nothing to compare."]
    setup_of = {(s.model, s.scenario): s for s in setups(data.run)}
    for model in dict.fromkeys(p.model for p in data.peaks):
        mine = [p for p in data.peaks if p.model == model]
        level = _ttft(data, model, mine[0].scenario)
        ttft_head = f"TTFT mean ms (level {level.level:g})" if level else "TTFT mean ms"
        rec = recommend(data, model)
        lines += [f"### {model.split('/')[-1]}", ""]
        lines += md_table(
            [
                "Scenario",
                "Peak output tok/s [95 % CI]",
                f"Throughput vs {baseline} [95 % CI]",
                "Throughput verdict",
                ttft_head,
                f"TTFT mean vs {baseline} [95 % CI]",
                "TTFT verdict",
                "Evidence",
            ],
            _verdict_rows(data, model),
        )
        lines += [
            "",
            f"**Recommended configuration: {rec.scenario}**: {rec.reason}."
            + _config_line(setup_of.get((model, rec.scenario))),
            "",
        ]
    lines += [
        "Verdicts: **gain** / **loss** (throughput) and **lower** / **higher** (TTFT) are "
        "significant on paired repeats; *indicative* = significant within one run only (or "
        "downgraded by a failed A/A check); n.s. = the 95 % interval contains 0. TTFT is "
        "compared at the common load level (the same level for every scenario).",
    ]
    return lines


def key_findings(data: ReportData) -> list[str]:
    sentences = key_finding_sentences(data)
    return ["## Key findings", ""] + ([f"- {s}" for s in sentences] or ["- No successful cell."])


def key_finding_sentences(data: ReportData) -> list[str]:
    sentences: list[str] = []
    for model in dict.fromkeys(p.model for p in data.peaks):
        sentences += _throughput_sentences(data, model)
        sentences += _ttft_sentences(data, model)
        sentences += _capacity_sentences(data, model)
    sentences += _validity_sentences(data)
    if any(p.delta.evidence == EVIDENCE_SINGLE for p in data.peaks):
        sentences.append(
            "Each scenario ran once: every significant result is indicative until repeated "
            "(`repeats: 3` measures run-to-run variance)."
        )
    return sentences


def _throughput_sentences(data: ReportData, model: str) -> list[str]:
    short, baseline = model.split("/")[-1], data.run.baseline
    others = [p for p in data.peaks if p.model == model and p.scenario != baseline]
    if not others:
        return []
    significant = [p for p in others if p.delta.significant]
    if not significant:
        return [
            f"{short}: no scenario changed peak output throughput significantly vs {baseline} "
            f"(all {count_phrase(len(others), 'interval')} contain 0)."
        ]
    out = []
    for group in _same_delta(sorted(significant, key=lambda p: -p.delta.delta_pct)):
        first = group[0]
        qualifier = " (indicative)" if first.delta.indicative else ""
        verb = change_phrase(first.delta, "peak output throughput")
        if len(group) > 1:  # "raises" -> "raise" for a plural subject
            verb = verb.replace("raises", "raise", 1).replace("lowers", "lower", 1)
        out.append(
            f"{short}: {join_names([p.scenario for p in group])} {verb} vs {baseline}{qualifier}."
        )
    rest = len(others) - len(significant)
    if rest:
        out.append(
            f"{short}: the other {count_phrase(rest, 'scenario')} did not differ significantly."
        )
    return out


def _ttft_sentences(data: ReportData, model: str) -> list[str]:
    short, baseline = model.split("/")[-1], data.run.baseline
    rows = [
        c
        for c in select(data.latency, model=model, stat=RULE_STAT, basis="common")
        if c.scenario != baseline
    ]
    significant = [c for c in rows if c.delta.significant]
    if not rows:
        return []
    if not significant:
        return [
            f"{short}: no scenario changed the TTFT mean significantly at level {rows[0].level:g}."
        ]
    out = []
    for group in _same_delta(sorted(significant, key=lambda c: c.delta.delta_pct)):
        c = group[0]
        qualifier = " (indicative)" if c.delta.indicative else ""
        verb = change_phrase(c.delta, "the TTFT mean")
        if len(group) > 1:
            verb = verb.replace("raises", "raise", 1).replace("lowers", "lower", 1)
        out.append(
            f"{short}: {join_names([x.scenario for x in group])} {verb} at level {c.level:g}: "
            f"{c.value_ms:.1f} ms vs {c.base_value_ms:.1f} ms{qualifier}."
        )
    return out


def _same_delta(rows: list) -> list[list]:
    """Consecutive rows whose delta prints the same (twins that came out alike) as one group, so
    one sentence names them together instead of repeating itself."""
    groups: list[list] = []
    for row in rows:
        if groups and groups[-1][0].delta.text() == row.delta.text():
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _capacity_sentences(data: ReportData, model: str) -> list[str]:
    setup = next((s for s in setups(data.run) if s.model == model and s.working_set), None)
    if setup is None or setup.working_set is None or setup.working_set.working_set_tokens is None:
        return []
    ws_tokens = setup.working_set.working_set_tokens
    gpu = next((c for c in setup.capacities if c.tier == "GPU"), None)
    if gpu is None or not gpu.tokens:
        return []
    ratio = ws_tokens / gpu.tokens
    fits = "does not fit" if ratio > 1 else "fits"
    return [
        f"{model.split('/')[-1]}: the workload's working set ({ws_tokens:,} tokens) is "
        f"{ratio:.2f}x the GPU KV cache ({gpu.tokens:,} tokens over all engines): it {fits} on "
        "the GPU"
        + (
            ", so a CPU tier has something to hold."
            if ratio > 1
            else ", so offload has little to do."
        )
    ]


def _validity_sentences(data: ReportData) -> list[str]:
    flags = [c for c in data.checks if c.status == CheckStatus.FLAG]
    if not flags:
        return ["No validity check flagged a problem."]
    names = list(dict.fromkeys(c.name for c in flags))
    touch = "it touches is" if len(flags) == 1 else "they touch are"
    return [
        f"{count_phrase(len(flags), 'validity flag')} ({join_names([repr(n) for n in names])}): "
        f"the numbers {touch} qualified in the Validity checks section."
    ]
