"""One cell, start to end: cache-state protocol, collection, the load, cell.json.

`run_cell` is async and runs inside the runner's `asyncio.run`; Ctrl-C cancels it, and the
collector thread is stopped in every case. The caller (runner.py) decides the final status on
exceptions; this module returns the status of a cell that ran to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvbench.collect.collector import Collector, snapshot
from kvbench.experiment import cache_state
from kvbench.results.layout import CellStatus
from kvbench.results.records import Phase, RequestRecord
from kvbench.results.store import CellWriter
from kvbench.results.summary import CellTally
from kvbench.spec.experiment import ExperimentSpec
from kvbench.targets.base import Deployment, Target
from kvbench.workload.types import Workload

PRIME_CONCURRENCY = 4


@dataclass
class RunnerHooks:
    """Test and UI hooks; every one is optional."""

    before_cell: Callable[[Any], None] | None = None  # called with the CellPlan before it starts
    on_record: Callable[[RequestRecord], None] | None = None  # after the record is stored
    on_progress: Callable[[Any], None] | None = None  # loadgen ProgressUpdate


@dataclass
class CellInputs:
    spec: ExperimentSpec
    target: Target
    deployment: Deployment
    endpoint: Any  # loadgen EndpointConfig
    clock: Any  # loadgen RunClock
    workload: Workload
    level_plan: Any  # loadgen LevelPlan
    hooks: RunnerHooks = field(default_factory=RunnerHooks)


async def run_cell(inputs: CellInputs, writer: CellWriter) -> tuple[CellStatus, str | None]:
    from kvbench.loadgen.api import run_level

    spec, info = inputs.spec, writer.info
    tally = CellTally()
    first_use = cache_state.FirstUseTally()
    prefix_len = {c.prefix_group: len(c.prefix_token_ids) for c in inputs.workload.conversations}

    def on_record(record: RequestRecord, phase: str | None = None) -> None:
        if phase is not None:
            record.phase = phase
        writer.add_request(record)
        tally.observe(record)
        first_use.observe(
            record.phase,
            record.prefix_group,
            record.sent_s,
            record.cached_tokens,
            prefix_len.get(record.prefix_group, 0),
        )
        if inputs.hooks.on_record is not None:
            inputs.hooks.on_record(record)

    protocol = await _reset_and_prime(inputs, info.cell_id, on_record, run_level)
    info.cache_protocol = protocol
    sources = inputs.deployment.metrics_sources
    before = (
        cache_state.counter_snapshot(await snapshot(sources))
        if spec.cache.verify and sources
        else None
    )
    writer.save()
    collector = Collector(
        sources,
        inputs.deployment.pids,
        spec.collect.interval_s,
        inputs.clock.now_s,
        writer.server_metrics.extend,
        writer.system_metrics.extend,
        spec.collect.server_metrics,
        spec.collect.system_metrics,
    )
    collector.start()
    try:
        result = await run_level(
            inputs.endpoint,
            inputs.workload.conversations,
            inputs.level_plan,
            cell_id=info.cell_id,
            clock=inputs.clock,
            on_record=on_record,
            on_progress=inputs.hooks.on_progress,
        )
    finally:
        scrape_stats = await asyncio.to_thread(collector.stop)
    writer.system_metrics.extend(
        {"ts_s": ts, "source": source, "metric": metric, "value": float(value)}
        for ts, source, metric, value in result.system_samples
    )
    if spec.cache.verify:
        protocol["verify"] = await _verify(sources, before, first_use, protocol["expected_state"])
    _fill_info(info, inputs, result, tally, scrape_stats)
    if tally.ok == 0:
        return (
            CellStatus.FAILED,
            f"no request succeeded ({tally.failed} failed; first error: {tally.first_error})",
        )
    return CellStatus.OK, None


async def _reset_and_prime(
    inputs: CellInputs, cell_id: str, on_record, run_level
) -> dict[str, Any]:
    spec = inputs.spec
    protocol: dict[str, Any] = {
        "reset_requested": spec.cache.reset,
        "prime_requested": spec.cache.prime,
    }
    reset_result = None
    if spec.cache.reset:
        reset_result = await asyncio.to_thread(inputs.target.reset_caches, inputs.deployment)
        protocol["reset"] = reset_result
    primes = cache_state.prime_conversations(inputs.workload) if spec.cache.prime else []
    if primes:
        from kvbench.loadgen.api import LevelPlan

        plan = LevelPlan(
            "concurrent",
            float(min(PRIME_CONCURRENCY, len(primes))),
            None,
            len(primes),
            seed=inputs.level_plan.seed,
        )
        result = await run_level(
            inputs.endpoint,
            primes,
            plan,
            cell_id=cell_id,
            clock=inputs.clock,
            on_record=lambda r: on_record(r, Phase.PRIME.value),
        )
        protocol["primed_prefixes"] = len(primes)
        protocol["prime_counts"] = dict(result.counts)
    protocol["expected_state"] = cache_state.expected_state(reset_result, primed=bool(primes))
    return protocol


async def _verify(sources, before, first_use, expected: str) -> dict[str, Any]:
    verdict = first_use.verdict(expected)
    if before is not None:
        after = cache_state.counter_snapshot(await snapshot(sources))
        verdict["server_counters"] = cache_state.counter_deltas(before, after)
        verdict["failed_sources"] = after["failed_sources"]
    return verdict


def _fill_info(info, inputs: CellInputs, result, tally: CellTally, scrape_stats: dict) -> None:
    info.measure_start_s = result.measure_start_s
    info.measure_end_s = result.measure_end_s
    info.client = dict(result.client_stats)
    info.summary = tally.summary(result.measure_start_s, result.measure_end_s)
    info.sources = dict(inputs.deployment.metrics_sources)
    failed_scrapes = sum(scrape_stats.get("scrapes_failed", {}).values())
    info.validity = {
        "loadgen_notes": list(result.notes),
        "return_token_ids": result.return_token_ids,
        "scrape": scrape_stats,
        "scrape_failures": failed_scrapes,
        "cache_state_consistent": info.cache_protocol.get("verify", {}).get("consistent"),
        "peak_in_flight": result.peak_in_flight,
    }
