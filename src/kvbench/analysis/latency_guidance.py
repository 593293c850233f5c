"""Latency findings and the latency guidance rule, written from `LatencyComparison`s by explicit rules.

All statements use the common load level (the same level for every scenario of a model), the fair
latency comparison. Rules:
- finding per scenario: its TTFT p50 against the baseline with interval and verdict, then which
  latency statistics are significantly lower / higher.
- precision finding: list the scenarios whose TTFT p50 point estimate moves by more than
  `LARGE_POINT_PCT` without being significant, and say how much data the intervals rest on.
- guidance: recommend a scenario for TTFT only if a TTFT statistic (p50 first, then mean) is
  significantly lower and neither TPOT p50 nor E2E p50 is significantly higher; pick the largest
  reduction, and state its peak-throughput verdict next to it. Otherwise keep the baseline.
"""

from __future__ import annotations

from kvbench.analysis.guidance import Finding
from kvbench.analysis.latency import STAT_BY_KEY, LatencyComparison, select
from kvbench.analysis.peaks import Peak, peak_of

TTFT_STATS = ("ttft_p50", "ttft_mean")
GUARD_STATS = ("tpot_p50", "e2e_p50")
LARGE_POINT_PCT = 20.0


def _short(model: str) -> str:
    return model.split("/")[-1]


def _label(stat: str) -> str:
    return STAT_BY_KEY[stat].label


def _verdict_word(c: LatencyComparison) -> str:
    return {"lower": "significantly lower", "higher": "significantly higher"}.get(c.verdict, c.verdict)


def latency_findings(comparisons: list[LatencyComparison], baseline: str) -> list[Finding]:
    out: list[Finding] = []
    for model in sorted({c.model for c in comparisons}):
        common = [c for c in select(comparisons, model=model, basis="common") if c.scenario != baseline]
        for scenario in dict.fromkeys(c.scenario for c in common):
            out.append(Finding("latency", model, _scenario_sentence(select(common, scenario=scenario), baseline)))
        precision = _precision_note(common, baseline)
        if precision:
            out.append(Finding("latency", model, precision))
    return out


def _scenario_sentence(rows: list[LatencyComparison], baseline: str) -> str:
    by_stat = {c.stat: c for c in rows}
    head = by_stat["ttft_p50"]
    lower = [f"{_label(c.stat)} {c.delta.text()}" for c in rows if c.verdict == "lower"]
    higher = [f"{_label(c.stat)} {c.delta.text()}" for c in rows if c.verdict == "higher"]
    return (f"{_short(head.model)} at level {head.level:g} (same level for all scenarios): {head.scenario} TTFT p50 "
            f"{head.value_ms:.1f} ms vs {head.base_value_ms:.1f} ms ({baseline}): {head.delta.text()}, "
            f"{_verdict_word(head)}. Significantly lower: {'; '.join(lower) or 'none'}. "
            f"Significantly higher: {'; '.join(higher) or 'none'}.")


def _precision_note(common: list[LatencyComparison], baseline: str) -> str | None:
    """Scenarios whose TTFT p50 moves by more than LARGE_POINT_PCT without being significant."""
    loose = [c for c in common if c.stat == "ttft_p50" and c.delta.known and not c.delta.significant
             and abs(c.delta.delta_pct) >= LARGE_POINT_PCT]
    if not loose:
        return None
    moves = ", ".join(f"{c.scenario} {c.delta.delta_pct:+.0f}%" for c in loose)
    sizes = sorted({c.delta.n for c in loose})
    return (f"{_short(loose[0].model)}: TTFT p50 point estimates move a lot ({moves} vs {baseline}) but none of these "
            f"is significant: the intervals rest on {loose[0].repeats} repeat(s) with "
            f"{sizes[0]}{'-' + str(sizes[-1]) if len(sizes) > 1 else ''} conversations per cell "
            f"({loose[0].delta.method.split(' (')[0]}); more repeats or a longer measure window are needed to tell.")


def latency_guidance(comparisons: list[LatencyComparison], peaks: list[Peak], baseline: str) -> list[Finding]:
    out: list[Finding] = []
    for model in sorted({c.model for c in comparisons}):
        common = [c for c in select(comparisons, model=model, basis="common") if c.scenario != baseline]
        if not common:
            continue
        level = common[0].level
        best = _best_ttft_reduction(common)
        if best is None:
            raised = [c for c in common if c.stat in TTFT_STATS and c.verdict == "higher"]
            text = (f"{_short(model)}, latency (TTFT) at level {level:g}: no scenario lowered TTFT significantly "
                    f"without raising TPOT or E2E; keep **{baseline}** for TTFT too"
                    + (": " + "; ".join(f"{c.scenario} raised {_label(c.stat)} by {c.delta.text()}" for c in raised)
                       if raised else "") + ".")
        else:
            text = (f"{_short(model)}, latency (TTFT) at level {level:g}: **{best.scenario}** lowers "
                    f"{_label(best.stat)} significantly by {best.delta.text()} ({best.value_ms:.1f} vs "
                    f"{best.base_value_ms:.1f} ms) without a significant TPOT or E2E increase"
                    + _throughput_clause(peak_of(peaks, model, best.scenario)) + ".")
        out.append(Finding("latency guidance", model, text))
    return out


def _best_ttft_reduction(common: list[LatencyComparison]) -> LatencyComparison | None:
    """The largest significant TTFT reduction (p50 preferred over mean) among scenarios whose TPOT p50
    and E2E p50 are not significantly higher."""
    candidates = []
    for scenario in dict.fromkeys(c.scenario for c in common):
        rows = {c.stat: c for c in select(common, scenario=scenario)}
        if any(rows[s].verdict == "higher" for s in GUARD_STATS if s in rows):
            continue
        lowered = [rows[s] for s in TTFT_STATS if s in rows and rows[s].verdict == "lower"]
        if lowered:
            candidates.append(lowered[0])
    return min(candidates, key=lambda c: c.delta.delta_pct) if candidates else None


def _throughput_clause(peak: Peak | None) -> str:
    if peak is None:
        return ""
    verdict = peak.delta.verdict
    if verdict == "gain":
        return f", and it raises peak throughput ({peak.delta.text()})"
    if verdict == "loss":
        return f", but it lowers peak throughput ({peak.delta.text()})"
    return f", but it does not raise peak throughput ({verdict}: {peak.delta.text()})"
