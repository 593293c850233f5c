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
from kvbench.collect.degradation import measure_degradation
from kvbench.collect.store_counters import store_page_async
from kvbench.experiment import cache_state
from kvbench.results.cell import CacheProtocol, CellInfo, CellValidity, ScrapeStats
from kvbench.results.manifest import CellStatus
from kvbench.results.records import Phase, RequestRecord
from kvbench.results.store import CellWriter
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
    # loadgen EndpointConfig; run_cell replaces it with one that holds what a probe learned, and
    # the runner hands that one to the group's next cell (so later cells skip the probe).
    endpoint: Any
    clock: Any  # loadgen RunClock
    workload: Workload
    level_plan: Any  # loadgen LevelPlan
    hooks: RunnerHooks = field(default_factory=RunnerHooks)


async def run_cell(inputs: CellInputs, writer: CellWriter) -> tuple[CellStatus, str | None]:
    from kvbench.loadgen.api import run_level

    spec, info = inputs.spec, writer.info
    first_use = cache_state.FirstUseTally()
    prefix_len = {c.prefix_group: len(c.prefix_token_ids) for c in inputs.workload.conversations}

    def on_record(record: RequestRecord) -> None:
        writer.add_request(record)
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
    sources = inputs.deployment.metrics_sources  # after the reset: it may have replaced them
    scrape_before = await snapshot(sources) if sources else {}
    before = cache_state.counter_snapshot(scrape_before) if spec.cache.verify and sources else None
    store_url = _store_url(inputs.deployment)
    store_before = await store_page_async(store_url)
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
        inputs.endpoint = inputs.endpoint.with_capabilities(result.probed)
    finally:
        scrape_stats = await asyncio.to_thread(collector.stop)
    writer.system_metrics.extend(
        {"ts_s": ts, "source": source, "metric": metric, "value": float(value)}
        for ts, source, metric, value in result.system_samples
    )
    scrape_after = await snapshot(sources) if sources else {}
    store_after = await store_page_async(store_url)
    if spec.cache.verify:
        protocol.verify = _verify(scrape_after, before, first_use, protocol.expected_state)
    writer.summarize(result.measure_start_s, result.measure_end_s)
    _fill_info(info, inputs, result, scrape_stats)
    # What the system could not do during the load, from its own counters (FLAG checks).
    # The store's INFO counters join the degradation scrapes only (they are not /metrics series).
    info.validity.degradation = measure_degradation(
        scrape_before | store_before, scrape_after | store_after, protocol.reset
    )
    summary = info.summary
    if summary is None or summary.requests_ok == 0:
        failed = summary.requests_failed if summary else 0
        first_error = summary.first_error if summary else None
        return (
            CellStatus.FAILED,
            f"no request succeeded ({failed} failed; first error: {first_error})",
        )
    return CellStatus.OK, None


def _store_url(deployment: Deployment) -> str | None:
    """The Redis / Valkey server kvbench runs for this deployment (None: none, or not reachable
    from here: a k8s store is known by its Deployment name only)."""
    store = deployment.facts.store
    return store.url if store is not None else None


async def _reset_and_prime(inputs: CellInputs, cell_id: str, on_record, run_level) -> CacheProtocol:
    spec = inputs.spec
    protocol = CacheProtocol(reset_requested=spec.cache.reset, prime_requested=spec.cache.prime)
    if spec.cache.reset:
        reset = await asyncio.to_thread(inputs.target.reset_caches, inputs.deployment)
        if reset.metrics_sources is not None:  # the target re-listed them (restarted pods)
            inputs.deployment.metrics_sources = reset.metrics_sources
        protocol.reset = reset
    primes = cache_state.prime_conversations(inputs.workload) if spec.cache.prime else []
    if primes:
        from kvbench.loadgen.api import LevelPlan

        plan = LevelPlan(
            "concurrent",
            float(min(PRIME_CONCURRENCY, len(primes))),
            None,
            len(primes),
            seed=inputs.level_plan.seed,
            record_phase=Phase.PRIME,
        )
        result = await run_level(
            inputs.endpoint,
            primes,
            plan,
            cell_id=cell_id,
            clock=inputs.clock,
            on_record=on_record,
        )
        inputs.endpoint = inputs.endpoint.with_capabilities(result.probed)
        protocol.primed_prefixes = len(primes)
        protocol.prime_counts = dict(result.counts)
    protocol.expected_state = cache_state.expected_state(protocol.reset, primed=bool(primes))
    return protocol


def _verify(scrape_after, before, first_use, expected: str) -> dict[str, Any]:
    verdict = first_use.verdict(expected)
    if before is not None:
        after = cache_state.counter_snapshot(scrape_after)
        verdict["server_counters"] = cache_state.counter_deltas(before, after)
        verdict["failed_sources"] = after["failed_sources"]
    return verdict


def _fill_info(info: CellInfo, inputs: CellInputs, result, scrape_stats: dict) -> None:
    info.client = dict(result.client_stats)
    info.sources = {name: str(url) for name, url in inputs.deployment.metrics_sources.items()}
    scrape = ScrapeStats.model_validate(scrape_stats)
    verify = info.cache_protocol.verify if info.cache_protocol else None
    info.validity = CellValidity(
        loadgen_notes=list(result.notes),
        return_token_ids=result.return_token_ids,
        scrape=scrape,
        scrape_failures=sum(scrape.scrapes_failed.values()),
        cache_state_consistent=(verify or {}).get("consistent"),
        peak_in_flight=result.peak_in_flight,
    )
