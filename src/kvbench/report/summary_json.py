"""`kvbench report RUN --format json` -> report/summary.json: everything the report's tables show,
as one typed document. Every field is declared with its unit and meaning (`docs/summary-json.md`
is generated from these models: `kvbench spec --summary-reference`). NaN becomes null.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kvbench.analysis.latency import LatencyComparison
from kvbench.analysis.stats import Delta
from kvbench.report.answer import recommend
from kvbench.report.data import ReportData
from kvbench.report.run_facts import setups

SCHEMA_VERSION = 1


def _f(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeltaJson(_Model):
    """A relative difference vs the baseline (or vs a twin) with its 95 % interval."""

    delta_pct: float | None = Field(
        description="point estimate, percent (+ = higher than the reference)"
    )
    ci_low_pct: float | None = Field(description="lower end of the 95 % interval, percent")
    ci_high_pct: float | None = Field(description="upper end of the 95 % interval, percent")
    significant: bool = Field(description="the interval excludes 0")
    evidence: str = Field(description="'paired-repeats' or 'single-run' (one cell per side)")
    method: str = Field(description="how the interval was computed")

    @classmethod
    def of(cls, d: Delta) -> DeltaJson:
        return cls(
            delta_pct=_f(d.delta_pct),
            ci_low_pct=_f(d.low_pct),
            ci_high_pct=_f(d.high_pct),
            significant=d.significant,
            evidence=d.evidence,
            method=d.method,
        )


class LatencyJson(_Model):
    statistic: str = Field(description="ttft_mean, ttft_p50, tpot_p50 or e2e_p50")
    basis: str = Field(description="'common' (same load level for all scenarios) or 'peak'")
    level: float = Field(description="load level of this scenario's cells")
    value_ms: float | None = Field(description="the statistic, milliseconds, mean over repeats")
    baseline_value_ms: float | None = Field(description="the baseline's value, milliseconds")
    verdict: str = Field(
        description="lower | higher | indicative lower | indicative higher | no significant difference | unknown"
    )
    delta: DeltaJson

    @classmethod
    def of(cls, c: LatencyComparison) -> LatencyJson:
        return cls(
            statistic=c.stat,
            basis=c.basis,
            level=c.level,
            value_ms=_f(c.value_ms),
            baseline_value_ms=_f(c.base_value_ms),
            verdict=c.verdict,
            delta=DeltaJson.of(c.delta),
        )


class ScenarioVerdict(_Model):
    """One row of the answer's verdict table."""

    scenario: str = Field(description="scenario label as in the spec")
    is_baseline: bool
    peak_level: float = Field(description="load level of the peak (streams or req/s)")
    repeats: int = Field(description="successful repeats at the peak level")
    peak_output_tok_s: float | None = Field(
        description="output tokens/s at the peak, mean over repeats"
    )
    peak_ci_low_tok_s: float | None = Field(
        description="95 % t-interval over repeats, low (null with 1 repeat)"
    )
    peak_ci_high_tok_s: float | None = Field(description="95 % t-interval over repeats, high")
    throughput_verdict: str = Field(
        description="baseline | gain | loss | indicative gain | indicative loss | no significant difference | unknown"
    )
    throughput_delta: DeltaJson | None = Field(
        description="peak throughput vs the baseline's peak; null for the baseline"
    )
    latency: list[LatencyJson] = Field(description="latency deltas vs the baseline")


class Recommendation(_Model):
    scenario: str = Field(description="the recommended configuration")
    basis: str = Field(
        description="'throughput' (firm gain), 'latency' (firm TTFT-mean reduction) or 'baseline'"
    )
    reason: str = Field(description="the rule's sentence")


class CapacityJson(_Model):
    scenario: str
    tier: str = Field(description="GPU, CPU or remote")
    tokens: int | None = Field(description="KV tokens the tier holds, all engines together")
    tokens_per_engine: int | None
    gigabytes: float | None = Field(description="tokens x KV bytes per token / 1e9")


class ModelSummary(_Model):
    model: str
    recommendation: Recommendation
    scenarios: list[ScenarioVerdict]
    capacities: list[CapacityJson]
    working_set_tokens: int | None = Field(
        description="unique prefixes + conversation history, tokens"
    )


class CheckJson(_Model):
    name: str
    status: str = Field(description="FLAG, ok or skipped")
    subject: str = Field(description="cell id, model or 'run'")
    evidence: str


class CellJson(_Model):
    """One row of complete_metrics.csv: the one throughput number per cell of every output."""

    cell_id: str
    model: str
    scenario: str
    level: float
    repeat: int
    status: str = Field(description="ok, failed, interrupted, pending or running")
    window_s: float | None = Field(description="measure window, seconds")
    requests_ok: int
    requests_failed: int
    output_tok_s: float | None = Field(description="output tokens/s over the measure window")
    request_rate_rps: float | None = Field(
        description="successful requests/s over the measure window"
    )
    ttft_mean_ms: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None = Field(description="(E2E - TTFT) / (output_tokens - 1), p50")
    e2e_p50_ms: float | None


class TwinJson(_Model):
    """Redis vs Valkey: the same configuration with the KV store swapped (the pairs with
    `aa_twin` are also the A/A check)."""

    model: str
    first: str
    second: str
    metric: str
    level: float
    delta: DeltaJson = Field(description="second relative to first")
    aa_twin: bool = Field(
        description="an A/A pair: the same client reaches either store (the router's index); "
        "LMCache's redis:// and valkey:// connectors are different clients"
    )


class HitSplitJson(_Model):
    model: str
    scenario: str
    level: float
    hit_requests: int = Field(
        description="requests whose cached tokens cover >= 50 % of the prompt"
    )
    miss_requests: int
    unknown_requests: int = Field(description="requests that reported no cached tokens")
    hit_ttft_mean_ms: float | None
    miss_ttft_mean_ms: float | None


class ReportSummary(_Model):
    schema_version: int = Field(description=f"this document's layout version ({SCHEMA_VERSION})")
    run_name: str
    system_under_test: str = Field(description="one line: what produced these numbers")
    emulated: bool = Field(description="true: numbers come from the emulator's cost model")
    baseline: str = Field(description="the scenario every delta is relative to")
    models: list[ModelSummary]
    key_findings: list[str] = Field(description="the report's key-finding sentences")
    checks: list[CheckJson] = Field(description="every validity check result")
    cells: list[CellJson]
    redis_vs_valkey: list[TwinJson]
    hit_splits: list[HitSplitJson]
    reproduce: str | None = Field(description="the `kvbench run` that repeats this run")


def build_summary(data: ReportData, key_findings: list[str]) -> ReportSummary:
    sut = data.run.manifest.system_under_test
    return ReportSummary(
        schema_version=SCHEMA_VERSION,
        run_name=data.run.manifest.run_name,
        system_under_test=sut.description,
        emulated=sut.emulated,
        baseline=data.run.baseline,
        models=[_model_summary(data, m) for m in dict.fromkeys(p.model for p in data.peaks)],
        key_findings=key_findings,
        checks=[
            CheckJson(name=c.name, status=c.status.value, subject=c.subject, evidence=c.evidence)
            for c in data.checks
        ],
        cells=[_cell(row) for row in data.metrics.to_dict("records")]
        if not data.metrics.empty
        else [],
        redis_vs_valkey=[
            TwinJson(
                model=t.model,
                first=t.first,
                second=t.second,
                metric=t.metric,
                level=t.level,
                delta=DeltaJson.of(t.delta),
                aa_twin=t.aa_twin,
            )
            for t in data.twins
        ],
        hit_splits=[
            HitSplitJson(
                model=h.model,
                scenario=h.scenario,
                level=h.level,
                hit_requests=h.hits,
                miss_requests=h.misses,
                unknown_requests=h.unknown,
                hit_ttft_mean_ms=_f(h.hit_ttft_mean_ms),
                miss_ttft_mean_ms=_f(h.miss_ttft_mean_ms),
            )
            for h in data.hit_splits
        ],
        reproduce=data.reproduce,
    )


def _model_summary(data: ReportData, model: str) -> ModelSummary:
    baseline = data.run.baseline
    rec = recommend(data, model)
    rows = []
    for p in (p for p in data.peaks if p.model == model):
        is_base = p.scenario == baseline
        rows.append(
            ScenarioVerdict(
                scenario=p.scenario,
                is_baseline=is_base,
                peak_level=p.level,
                repeats=p.throughput.n,
                peak_output_tok_s=_f(p.throughput.mean),
                peak_ci_low_tok_s=_f(p.throughput.low),
                peak_ci_high_tok_s=_f(p.throughput.high),
                throughput_verdict="baseline" if is_base else p.delta.verdict,
                throughput_delta=None if is_base else DeltaJson.of(p.delta),
                latency=[
                    LatencyJson.of(c)
                    for c in data.latency
                    if c.model == model and c.scenario == p.scenario and not is_base
                ],
            )
        )
    mine = [s for s in setups(data.run) if s.model == model]
    working = next((s.working_set for s in mine if s.working_set), None)
    return ModelSummary(
        model=model,
        recommendation=Recommendation(scenario=rec.scenario, basis=rec.basis, reason=rec.reason),
        scenarios=rows,
        capacities=[
            CapacityJson(
                scenario=s.scenario,
                tier=c.tier,
                tokens=c.tokens,
                tokens_per_engine=c.tokens_per_engine,
                gigabytes=None if c.bytes is None else c.bytes / 1e9,
            )
            for s in mine
            for c in s.capacities
        ],
        working_set_tokens=working.working_set_tokens if working else None,
    )


def _cell(row: dict[str, Any]) -> CellJson:
    return CellJson(
        cell_id=row["cell_id"],
        model=row["model"],
        scenario=row["scenario"],
        level=float(row["level"]),
        repeat=int(row["repeat"]),
        status=row["status"],
        window_s=_f(row.get("window_s")),
        requests_ok=int(row.get("requests_ok", 0)),
        requests_failed=int(row.get("requests_failed", 0)),
        output_tok_s=_f(row.get("output_tok_s")),
        request_rate_rps=_f(row.get("request_rate_rps")),
        ttft_mean_ms=_f(row.get("ttft_mean_ms")),
        ttft_p50_ms=_f(row.get("ttft_p50_ms")),
        ttft_p99_ms=_f(row.get("ttft_p99_ms")),
        tpot_p50_ms=_f(row.get("tpot_p50_ms")),
        e2e_p50_ms=_f(row.get("e2e_p50_ms")),
    )
