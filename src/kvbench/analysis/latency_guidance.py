"""Latency findings and the latency guidance rule, written from `LatencyComparison`s by explicit rules.

All statements use the common load level (the same level for every scenario of a model), the fair
latency comparison. TTFT is often bimodal (prefix hit vs miss), so its p50 jumps between the modes
when the hit share crosses one half; the rules therefore use the TTFT **mean** (`RULE_STAT`) and show
the p50 as context only. Rules:
- finding per scenario: its TTFT mean against the baseline with interval and verdict, the p50 as
  context, which latency statistics are significantly lower / higher, and (when hits and misses
  are known) how the mean shift splits into more hits vs faster hits vs faster misses.
- precision finding: the scenarios whose TTFT point estimate moves by more than `LARGE_POINT_PCT`
  without being significant, and how much data the intervals rest on.
- guidance: recommend a scenario for TTFT only on a firm 'lower' TTFT mean (paired repeats, no
  failed A/A check) with no significant TPOT p50 or E2E p50 increase; pick the largest reduction and
  state its peak-throughput verdict. An 'indicative lower' (single run, or downgraded by the A/A
  check) is never a recommendation: the guidance keeps the baseline and says "indicative: X lowers
  TTFT by ... in this run; confirm with repeats: CONFIRM_REPEATS".
"""

from __future__ import annotations

from collections.abc import Sequence

from kvbench.analysis.guidance import CONFIRM_REPEATS, Finding
from kvbench.analysis.hits import HitSplit, shift_sentence
from kvbench.analysis.latency import STAT_BY_KEY, LatencyComparison, select
from kvbench.analysis.peaks import Peak, peak_of
from kvbench.analysis.phrases import change_phrase, count_phrase
from kvbench.analysis.stats import EVIDENCE_PAIRED, is_indicative

RULE_STAT = "ttft_mean"
CONTEXT_STAT = "ttft_p50"
TTFT_STATS = (RULE_STAT, CONTEXT_STAT)
GUARD_STATS = ("tpot_p50", "e2e_p50")
LARGE_POINT_PCT = 20.0


def _short(model: str) -> str:
    return model.split("/")[-1]


def _label(stat: str) -> str:
    return STAT_BY_KEY[stat].label


def _verdict_word(c: LatencyComparison) -> str:
    """The verdict as in latency_deltas.csv, with what an indicative one rests on."""
    word = {"lower": "significantly lower", "higher": "significantly higher"}.get(
        c.verdict, c.verdict
    )
    return f"{word}, i.e. {c.delta.meaning()}" if is_indicative(c.verdict) else word


def _significant(c: LatencyComparison) -> bool:
    return c.delta.significant


def latency_findings(
    comparisons: list[LatencyComparison], baseline: str, splits: Sequence[HitSplit] = ()
) -> list[Finding]:
    out: list[Finding] = []
    split_of = {(h.model, h.scenario): h for h in splits}
    for model in sorted({c.model for c in comparisons}):
        common = [
            c for c in select(comparisons, model=model, basis="common") if c.scenario != baseline
        ]
        for scenario in dict.fromkeys(c.scenario for c in common):
            text = _scenario_sentence(select(common, scenario=scenario), baseline)
            base_split, split = split_of.get((model, baseline)), split_of.get((model, scenario))
            why = shift_sentence(base_split, split) if base_split and split else None
            out.append(Finding("latency", model, text + (f" Why: {why}." if why else "")))
        precision = _precision_note(common, baseline)
        if precision:
            out.append(Finding("latency", model, precision))
    return out


def _scenario_sentence(rows: list[LatencyComparison], baseline: str) -> str:
    by_stat = {c.stat: c for c in rows}
    head, context = by_stat[RULE_STAT], by_stat.get(CONTEXT_STAT)
    lower = [
        f"{_label(c.stat)} {c.delta.text()}" + (" (indicative)" if is_indicative(c.verdict) else "")
        for c in rows
        if _significant(c) and c.delta.delta_pct < 0
    ]
    higher = [
        f"{_label(c.stat)} {c.delta.text()}" + (" (indicative)" if is_indicative(c.verdict) else "")
        for c in rows
        if _significant(c) and c.delta.delta_pct > 0
    ]
    p50 = (
        f" (TTFT p50 {context.value_ms:.1f} vs {context.base_value_ms:.1f} ms, {context.delta.text()}, as context)"
        if context
        else ""
    )
    return (
        f"{_short(head.model)} at level {head.level:g} (same level for all scenarios): {head.scenario} TTFT mean "
        f"{head.value_ms:.1f} ms vs {head.base_value_ms:.1f} ms ({baseline}): {head.delta.text()}, "
        f"{_verdict_word(head)}{p50}. Significantly lower: {'; '.join(lower) or 'none'}. "
        f"Significantly higher: {'; '.join(higher) or 'none'}."
    )


def _precision_note(common: list[LatencyComparison], baseline: str) -> str | None:
    """Scenarios whose TTFT mean or p50 moves by more than LARGE_POINT_PCT without being significant."""
    loose = [
        c
        for c in common
        if c.stat in TTFT_STATS
        and c.delta.known
        and not c.delta.significant
        and abs(c.delta.delta_pct) >= LARGE_POINT_PCT
    ]
    if not loose:
        return None
    moves = ", ".join(f"{c.scenario} {_label(c.stat)} {c.delta.delta_pct:+.0f}%" for c in loose)
    return (
        f"{_short(loose[0].model)}: TTFT point estimates move a lot ({moves} vs {baseline}) but none of these "
        f"is significant: the intervals rest on {_sample_size(loose)} "
        f"({loose[0].delta.method.split(' (')[0]}); more repeats or a longer measure window are needed to tell."
    )


def _sample_size(rows: list[LatencyComparison]) -> str:
    """What the intervals' n counts: repeat pairs (paired evidence) or conversations per cell."""
    sizes = sorted({c.delta.n for c in rows})
    span = f"{sizes[0]}" + (f"-{sizes[-1]}" if len(sizes) > 1 else "")
    if rows[0].delta.evidence == EVIDENCE_PAIRED:
        return f"{span} repeat pair{'s' if sizes[-1] != 1 else ''} per scenario"
    return f"{count_phrase(rows[0].repeats, 'repeat')} with {span} conversations per cell"


def latency_guidance(
    comparisons: list[LatencyComparison], peaks: list[Peak], baseline: str
) -> list[Finding]:
    out: list[Finding] = []
    for model in sorted({c.model for c in comparisons}):
        common = [
            c for c in select(comparisons, model=model, basis="common") if c.scenario != baseline
        ]
        if not common:
            continue
        head = f"{_short(model)}, latency (TTFT mean) at level {common[0].level:g}"
        best = best_ttft_reduction(common, "lower")
        if best is not None:
            text = (
                f"{head}: **{best.scenario}** significantly {change_phrase(best.delta, 'TTFT mean')} "
                f"({best.value_ms:.1f} vs {best.base_value_ms:.1f} ms{_p50_context(common, best)}) without a "
                "significant TPOT or E2E increase"
                + _throughput_clause(peak_of(peaks, model, best.scenario))
                + "."
            )
        else:
            text = _keep_baseline(head, common, baseline)
        out.append(Finding("latency guidance", model, text))
    return out


def _keep_baseline(head: str, common: list[LatencyComparison], baseline: str) -> str:
    hint = best_ttft_reduction(common, "indicative lower")
    raised = [
        c for c in common if c.stat in TTFT_STATS and _significant(c) and c.delta.delta_pct > 0
    ]
    text = (
        f"{head}: no scenario lowered TTFT mean on firm evidence without raising TPOT or E2E; keep "
        f"**{baseline}** for TTFT too"
        + (
            ": "
            + "; ".join(
                f"{c.scenario} {change_phrase(c.delta, _label(c.stat), 'raised', 'lowered')} ({c.verdict})"
                for c in raised
            )
            if raised
            else ""
        )
        + "."
    )
    if hint is not None:
        text += (
            f" Indicative: {hint.scenario} {change_phrase(hint.delta, 'TTFT mean')} ({hint.value_ms:.1f} vs "
            f"{hint.base_value_ms:.1f} ms{_p50_context(common, hint)}) in this run ({hint.delta.indicative_reason()}); "
            f"confirm with repeats: {CONFIRM_REPEATS}."
        )
    return text


def _p50_context(common: list[LatencyComparison], chosen: LatencyComparison) -> str:
    rows = select(common, scenario=chosen.scenario, stat=CONTEXT_STAT)
    return f"; p50 {rows[0].value_ms:.1f} vs {rows[0].base_value_ms:.1f} ms" if rows else ""


def best_ttft_reduction(common: list[LatencyComparison], verdict: str) -> LatencyComparison | None:
    """The largest TTFT-mean reduction with exactly `verdict` ('lower' or 'indicative lower') among
    scenarios whose TPOT p50 and E2E p50 are not significantly higher (firm or indicative)."""
    candidates = []
    for scenario in dict.fromkeys(c.scenario for c in common):
        rows = {c.stat: c for c in select(common, scenario=scenario)}
        if any(
            _significant(rows[s]) and rows[s].delta.delta_pct > 0 for s in GUARD_STATS if s in rows
        ):
            continue
        if RULE_STAT in rows and rows[RULE_STAT].verdict == verdict:
            candidates.append(rows[RULE_STAT])
    return min(candidates, key=lambda c: c.delta.delta_pct) if candidates else None


def _throughput_clause(peak: Peak | None) -> str:
    if peak is None:
        return ""
    verdict = peak.delta.verdict
    if verdict == "gain":
        return f", and it raises peak throughput ({peak.delta.text()})"
    if verdict == "loss":
        return f", but it lowers peak throughput ({peak.delta.text()})"
    return f"; its peak throughput vs the baseline: {verdict} ({peak.delta.text()})"
