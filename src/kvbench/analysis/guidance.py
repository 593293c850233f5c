"""Findings and deployment guidance, written from the data by explicit rules.

Every rule states its numbers (peak tok/s, delta with its 95 % interval, tier evidence). A delta
whose interval contains zero is written "no significant difference" and never drives a
recommendation: without a significant gain the guidance keeps the baseline (the simpler stack).
Single-repeat rule: a significant delta that rests on one repeat per side (evidence 'single-run'),
or on a model whose A/A twin check failed, has the verdict 'indicative gain' / 'indicative loss';
it is never a recommendation: the guidance keeps the baseline and adds "indicative: X raises ...
in this run; confirm with repeats: CONFIRM_REPEATS".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kvbench.analysis.check_names import AA_TWINS_AGREE, BOUND_CHECKS
from kvbench.analysis.load import RunData
from kvbench.analysis.metrics import measure_window_s
from kvbench.analysis.peaks import Peak, fmt_tok_s
from kvbench.analysis.phrases import change_phrase, join_names
from kvbench.analysis.server import tier_hits
from kvbench.analysis.stats import equivalence, is_indicative
from kvbench.analysis.validity import Check, CheckStatus

EQUIVALENCE_MARGIN_PCT = 5.0
CONFIRM_REPEATS = 3  # the `repeats:` value the guidance asks for to confirm an indicative result
CAPACITY_KEY = re.compile(r"cpu|size|blocks|bytes", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    rule: str  # which rule produced it
    model: str
    text: str


def build_findings(
    run: RunData, peaks: list[Peak], checks: list[Check], twins: Sequence = ()
) -> list[Finding]:
    """`twins`: `twins.TwinDelta`s (the A/A comparisons); their throughput rows give the Redis vs Valkey findings."""
    found: list[Finding] = []
    for model in run.models():
        mine = [p for p in peaks if p.model == model]
        if not mine:
            found.append(
                Finding(
                    "best scenario",
                    model,
                    f"{_short(model)}: no successful cell, nothing to compare.",
                )
            )
            continue
        found += [_best_scenario(run, mine)]
        found += _offload_verdicts(run, mine, checks)
        found += _routing_verdicts(run, mine, checks)
        found += _capacity_effects(mine, run.baseline)
        found += _backend_equivalence(
            [t for t in twins if t.model == model and t.metric == "peak output throughput"]
        )
    return found


def deployment_guidance(run: RunData, peaks: list[Peak], checks: list[Check]) -> list[Finding]:
    guidance = []
    for model in run.models():
        mine = [p for p in peaks if p.model == model]
        if not mine:
            continue
        guidance += _aa_statement(checks, model)
        gains = sorted(
            (p for p in mine if p.delta.verdict == "gain"), key=lambda p: -p.delta.delta_pct
        )
        chosen = gains[:1] or [p for p in mine if p.scenario == run.baseline]
        caveats = _caveats(checks, model, chosen)
        if gains:
            best = gains[0]
            text = (
                f"{_short(model)}: use **{best.scenario}** ({best.delta.text()} output throughput vs "
                f"{run.baseline} at its peak level {best.level:g})."
            )
        else:
            text = _keep_baseline_text(model, mine, run.baseline)
        guidance.append(
            Finding("deployment", model, text + (f" Caveat: {caveats}." if caveats else ""))
        )
    return guidance


def _keep_baseline_text(model: str, mine: list[Peak], baseline: str) -> str:
    losses = [p.scenario for p in mine if p.delta.verdict == "loss"]
    text = (
        f"{_short(model)}: keep **{baseline}**: no scenario showed a significant gain on firm evidence"
        + (f"; {', '.join(losses)} cost throughput." if losses else ".")
    )
    hints = sorted(
        (p for p in mine if p.delta.verdict == "indicative gain"), key=lambda p: -p.delta.delta_pct
    )
    if hints:
        best = hints[0]
        text += (
            f" Indicative: {best.scenario} {change_phrase(best.delta, 'peak output throughput')} in this run "
            f"({best.delta.indicative_reason()}); confirm with repeats: {CONFIRM_REPEATS}."
        )
    return text


def _aa_statement(checks: list[Check], model: str) -> list[Finding]:
    """A failed A/A check, said once per model at the top of its guidance."""
    failed = [
        c
        for c in checks
        if c.name == AA_TWINS_AGREE and c.subject == model and c.status == CheckStatus.FLAG
    ]
    if not failed:
        return []
    return [
        Finding(
            "A/A check", model, f"{_short(model)}: the A/A twin check failed: {failed[0].evidence}."
        )
    ]


def _short(model: str) -> str:
    return model.split("/")[-1]


def _best_scenario(run: RunData, mine: list[Peak]) -> Finding:
    best = max(mine, key=lambda p: p.throughput.mean)
    model = best.model
    tied = [p for p in mine if fmt_tok_s(p.throughput) == fmt_tok_s(best.throughput)]
    if len(tied) > 1:
        return Finding(
            "best scenario",
            model,
            f"{_short(model)}: {join_names([p.scenario for p in tied])} tie for the highest peak "
            f"output throughput ({fmt_tok_s(best.throughput)} tok/s at level {best.level:g}).",
        )
    if best.scenario == run.baseline:
        return Finding(
            "best scenario",
            model,
            f"{_short(model)}: the baseline {run.baseline} has the highest peak "
            f"output throughput ({fmt_tok_s(best.throughput)} tok/s at level {best.level:g}).",
        )
    verdict = best.delta.verdict
    if is_indicative(verdict):
        text = (
            f"{_short(model)}: {best.scenario} has the highest peak ({fmt_tok_s(best.throughput)} tok/s at level "
            f"{best.level:g}), an {verdict} of {best.delta.text()} over {run.baseline} ({best.delta.indicative_reason()})."
        )
    elif verdict == "gain":
        text = (
            f"{_short(model)}: {best.scenario} has the highest peak ({fmt_tok_s(best.throughput)} tok/s at level "
            f"{best.level:g}), a significant gain of {best.delta.text()} over {run.baseline}."
        )
    else:
        text = (
            f"{_short(model)}: {best.scenario} has the highest mean peak ({fmt_tok_s(best.throughput)} tok/s at "
            f"level {best.level:g}) but against {run.baseline} that is {verdict} ({best.delta.text()})."
        )
    return Finding("best scenario", model, text)


def _tier_text(peak: Peak) -> str:
    cell = peak.cells[0]
    tiers = tier_hits(cell, measure_window_s(cell))
    cpu, remote = tiers["cpu_hit_tokens"], tiers["remote_hit_tokens"]
    if math.isnan(cpu) and math.isnan(remote):
        return "no tier attribution"
    parts = []
    if not math.isnan(cpu):
        parts.append(f"{cpu:.0f} CPU-tier hit tokens")
    if not math.isnan(remote):
        parts.append(f"{remote:.0f} remote-tier hit tokens")
    return ", ".join(parts) + " in the peak cell"


def _offload_verdicts(run: RunData, mine: list[Peak], checks: list[Check]) -> list[Finding]:
    out = []
    for peak in mine:
        if not run.offloads(peak.base_scenario) or peak.scenario == run.baseline:
            continue
        verdict = peak.delta.verdict
        word = {
            "gain": "pays",
            "loss": "costs",
            "no significant difference": "makes no significant difference",
            "unknown": "cannot be judged (no interval)",
            "indicative gain": f"may pay (indicative gain, {peak.delta.indicative_reason()})",
            "indicative loss": f"may cost (indicative loss, {peak.delta.indicative_reason()})",
        }[verdict]
        text = (
            f"{_short(peak.model)}: {peak.scenario} {word}: {peak.delta.text()} vs {run.baseline} "
            f"({_tier_text(peak)})."
        )
        caveat = _caveats(checks, peak.model, [peak])
        out.append(Finding("offload", peak.model, text + (f" Caveat: {caveat}." if caveat else "")))
    return out


def _routing_verdicts(run: RunData, mine: list[Peak], checks: list[Check]) -> list[Finding]:
    out = []
    for peak in mine:
        if not run.routes_precisely(peak.base_scenario):
            continue
        meaning = f"; {peak.delta.indicative_reason()}" if is_indicative(peak.delta.verdict) else ""
        text = f"{_short(peak.model)}: {peak.scenario} vs {run.baseline}: {peak.delta.verdict} ({peak.delta.text()}{meaning})."
        caveat = _caveats(checks, peak.model, [peak])
        out.append(Finding("routing", peak.model, text + (f" Caveat: {caveat}." if caveat else "")))
    return out


def _capacity_effects(mine: list[Peak], baseline: str) -> list[Finding]:
    """Scenarios of one base that differ in a CPU-capacity parameter: how the verdict moved with capacity."""
    out = []
    by_base: dict[str, list[tuple[float, str, Peak]]] = {}
    for peak in mine:
        params = peak.cells[0].info.swept_params if peak.cells else {}
        capacity = [
            (k, v)
            for k, v in sorted(params.items())
            if CAPACITY_KEY.search(k) and isinstance(v, (int, float))
        ]
        if capacity:
            key, value = capacity[0]
            by_base.setdefault(f"{peak.base_scenario}|{key}", []).append((float(value), key, peak))
    for group_key, entries in by_base.items():
        if len({v for v, _, _ in entries}) < 2:
            continue
        entries.sort(key=lambda e: e[0])
        steps = [
            f"{key}={value:g}: {p.delta.verdict} ({p.delta.text()}, {fmt_tok_s(p.throughput)} tok/s)"
            for value, key, p in entries
        ]
        verdicts = {p.delta.verdict for _, _, p in entries}
        change = (
            "the verdict changed with CPU capacity"
            if len(verdicts) > 1
            else "the verdict did not change with CPU capacity"
        )
        base = group_key.split("|")[0]
        out.append(
            Finding(
                "cpu capacity",
                entries[0][2].model,
                f"{_short(entries[0][2].model)}: {base} vs {baseline} by CPU capacity: "
                + "; ".join(steps)
                + f"; {change}.",
            )
        )
    return out


def _backend_equivalence(twins: list) -> list[Finding]:
    """Redis vs Valkey throughput (the A/A twin deltas): equivalent only inside the margin."""
    out = []
    for twin in twins:
        kind = equivalence(twin.delta, EQUIVALENCE_MARGIN_PCT)
        sentence = {
            "equivalent": f"equivalent within +-{EQUIVALENCE_MARGIN_PCT:g} %",
            "different": "different",
            "inconclusive": f"not shown equivalent: the interval is wider than +-{EQUIVALENCE_MARGIN_PCT:g} % and contains zero",
            "unknown": "not comparable (no interval)",
        }[kind]
        out.append(
            Finding(
                "redis vs valkey",
                twin.model,
                f"{_short(twin.model)}: {twin.second} vs {twin.first}: {twin.delta.text()}: {sentence}.",
            )
        )
    return out


def _caveats(checks: list[Check], model: str, peaks: list[Peak]) -> str:
    """Flagged checks that touch this model (by model name or by one of the peak cells)."""
    cell_ids = {c.cell_id for p in peaks for c in p.cells}
    subjects = {model} | cell_ids | {f"{p.model_short} / {p.scenario} @ {p.level:g}" for p in peaks}
    names = sorted(
        {
            c.name
            for c in checks
            if c.status == CheckStatus.FLAG and c.subject in subjects and c.name in BOUND_CHECKS
        }
    )
    return ", ".join(f"'{n}' flagged" for n in names)
