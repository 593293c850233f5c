"""Closing sections: Redis vs Valkey, limitations, and the command that reproduces the run."""

from __future__ import annotations

from kvbench.analysis.guidance import EQUIVALENCE_MARGIN_PCT
from kvbench.analysis.stats import EVIDENCE_SINGLE, equivalence
from kvbench.analysis.validity import CheckStatus
from kvbench.report.data import ReportData
from kvbench.report.run_facts import load_facts
from kvbench.report.tables import md_table

EQUIVALENCE_WORDS = {
    "equivalent": f"equivalent (the whole interval lies within +-{EQUIVALENCE_MARGIN_PCT:g} %)",
    "different": "different (the interval excludes 0)",
    "inconclusive": f"not shown equivalent (the interval contains 0 but is wider than "
    f"+-{EQUIVALENCE_MARGIN_PCT:g} %)",
    "unknown": "not comparable (no interval)",
}


def redis_valkey_section(data: ReportData) -> list[str]:
    lines = ["## Redis vs Valkey", ""]
    if not data.twins:
        return lines + [
            "This run has no Redis / Valkey pair of the same configuration "
            "(lmcache-redis with lmcache-valkey, or llm-d-redis with llm-d-valkey): no comparison."
        ]
    lines += [
        "The same configuration with the KV store swapped. Behind the router's block index "
        "Redis and Valkey speak the same protocol through the same client, so any difference is "
        "the store's (or noise: those pairs are also the A/A check). LMCache reaches each through "
        "another connector (its valkey:// one pipelines batches over a pool of worker threads), "
        "so its pairs compare the whole store path, client included. Equivalent only when the "
        "whole 95 % interval lies within "
        f"+-{EQUIVALENCE_MARGIN_PCT:g} %.",
        "",
    ]
    rows = [
        [
            t.model.split("/")[-1],
            f"{t.second} vs {t.first}",
            t.metric,
            f"{t.level:g}",
            t.delta.text(),
            EQUIVALENCE_WORDS[equivalence(t.delta, EQUIVALENCE_MARGIN_PCT)],
        ]
        for t in data.twins
    ]
    return lines + md_table(
        ["Model", "Pair", "Metric", "Level", "Delta [95 % CI]", "Reading"], rows
    )


def limitations_section(data: ReportData) -> list[str]:
    sut = data.run.manifest.system_under_test
    load = load_facts(data.run)
    items = []
    if sut.emulated:
        items.append(
            "The numbers come from kvbench's emulator and cost model: they show relative "
            "behaviour of the configurations, not what real GPUs would measure."
        )
    else:
        items.append(
            f"The results hold for the system under test ({sut.description}); another GPU, CPU "
            "memory size or host link changes what offload can gain."
        )
    if any(p.delta.evidence == EVIDENCE_SINGLE for p in data.peaks):
        items.append(
            "One repeat per scenario: intervals cover the variation inside one run only, not "
            "between runs, so no verdict here is firm."
        )
    if len(load.levels) == 1:
        items.append(
            f"One load level ({load.levels[0]:g}): the peak is that level's throughput, not the "
            "stack's capacity; behaviour at other loads is not measured."
        )
    if load.windows_s and max(load.windows_s) < 60:
        items.append(
            f"Short measure windows ({max(load.windows_s):.0f} s at most): few conversations per "
            "cell, so intervals are wide."
        )
    flagged = sorted({c.name for c in data.checks if c.status == CheckStatus.FLAG})
    if flagged:
        items.append("Validity flags qualify the numbers they touch: " + ", ".join(flagged) + ".")
    return ["## Limitations", ""] + [f"- {item}" for item in items]


def reproduce_section(data: ReportData) -> list[str]:
    lines = ["## Reproduce", ""]
    if data.reproduce is None:
        return lines + [
            "This run directory carries no experiment spec (e.g. an imported GuideLLM run): "
            "it cannot be re-run by kvbench."
        ]
    return lines + [
        "The spec exactly as this run loaded it is `spec.yaml` beside this report; to run the "
        "same experiment again (same seeds, same cells) into a new directory:",
        "",
        "```bash",
        data.reproduce,
        "```",
        "",
        f"Rebuild this report: `kvbench report {data.run.run_dir}` "
        "(`--format md,csv,png,html,json`).",
    ]
