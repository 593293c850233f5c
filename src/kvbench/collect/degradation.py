"""Degradation of one cell, counted from the servers' own counters.

The sources are the engines' and the router's /metrics, and the KV store's INFO counters
(collect/store_counters.py, merged into the scrapes as one more source).

A cell can "succeed" while the system under test quietly did less than it should: the LMCache
remote store was down (lookups became misses), the router's KV-block index could not be read (it
routed blind), KV events were lost beyond replay (its index misses blocks), an engine was ejected,
a cache reset failed (the cell may have started warm), the store refused writes for lack of memory
(those chunks were never stored). Each of these is a counter some server exports; the cell's value
is the counter's increase between a scrape before the load and one after.

Contract:
- `DegradationCounts` holds one count per kind (int), or None when no source exports the counter
  (a real vLLM has no kvbench counters: "not measured", never 0);
- a counter that went down between the scrapes was reset (the server restarted): its increase is
  then its value after (what it counted since the restart), never negative;
- a source that could not be scraped before or after is listed in `unscraped_sources`; its
  counters are left out of the sums (a failed source cannot be counted as "no degradation").
- `failed_resets` comes from the target's reset result, not from /metrics (`count_failed_resets`);
- the counts are recorded in cell.json (`validity.degradation`, results/cell.py) and each kind that
  happened is a FLAG validity check (analysis/degradation_checks.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kvbench.collect.prometheus import Sample
from kvbench.results.cell import DegradationCounts
from kvbench.results.deployment import ROUTING_ONLY_COMPONENTS, ResetResult

# kind -> the counter sample names (summed over label sets and sources) that count it.
DEGRADATION_COUNTERS: dict[str, tuple[str, ...]] = {
    # LMCache remote tier (engines): operations that failed, and those skipped while the breaker
    # was open (the store was known to be down).
    "store_errors": ("kvbench:lmcache_remote_errors_total",),
    "store_skipped": ("kvbench:lmcache_remote_skipped_total",),
    # The router's KV-block index (llm-d precise prefix scoring).
    "index_lookup_failures": ("kvbench_router_index_lookup_failures_total",),
    "kv_events_lost": ("kvbench_router_kv_events_lost_total",),
    "kv_events_apply_failures": ("kvbench_router_kv_events_apply_failures_total",),
    # Engines taken out of routing (dead, HTTP errors, unresponsive).
    "engine_ejections": ("kvbench_router_endpoint_ejections_total",),
    # The Redis / Valkey server itself (collect/store_counters.py, from its INFO): writes it
    # refused for lack of memory, connections it refused. These are seen for any engine, a real
    # vLLM's LMCache included, since they are the store's own counters.
    "store_writes_refused": ("kvbench_store_oom_refusals_total",),
    "store_connections_rejected": ("kvbench_store_rejected_connections_total",),
}


CounterTotals = dict[str, dict[str, float]]  # source -> sample name -> sum over label sets


def degradation_totals(scrape: Mapping[str, list[Sample] | str]) -> CounterTotals:
    """Per source, the degradation counters it exports (a source that failed maps to {})."""
    wanted = {name for names in DEGRADATION_COUNTERS.values() for name in names}
    totals: CounterTotals = {}
    for source, samples in scrape.items():
        if isinstance(samples, str):
            continue  # the scrape failed: the error text
        sums: dict[str, float] = {}
        for sample in samples:
            if sample.name in wanted:
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
        totals[source] = sums
    return totals


def degradation_deltas(
    before: CounterTotals, after: CounterTotals, sources: Iterable[str]
) -> DegradationCounts:
    counts = DegradationCounts()
    unscraped = sorted(s for s in sources if s not in before or s not in after)
    counts.unscraped_sources = unscraped
    scraped = [s for s in sources if s in before and s in after]
    for kind, names in DEGRADATION_COUNTERS.items():
        increases = [
            _increase(before[source].get(name), after[source][name])
            for source in scraped
            for name in names
            if name in after[source]
        ]
        if increases:
            setattr(counts, kind, int(round(sum(increases))))
    return counts


def _increase(before: float | None, after: float) -> float:
    if before is None or after < before:  # a new series, or the server restarted
        return after
    return after - before


def count_failed_resets(reset: ResetResult | None) -> int | None:
    """KV-holding components whose cache reset did not happen (None: no reset was attempted).

    A routing-only component (a router whose approximate index has no reset API) holds no KV: its
    reset is not counted either way."""
    if reset is None or not reset.components:
        return None
    return sum(
        0 if outcome.reset else 1
        for name, outcome in reset.components.items()
        if name not in ROUTING_ONLY_COMPONENTS
    )


def measure_degradation(
    scrape_before: Mapping[str, list[Sample] | str],
    scrape_after: Mapping[str, list[Sample] | str],
    reset: ResetResult | None,
) -> DegradationCounts:
    """The cell's degradation from one scrape of every source before its load and one after."""
    counts = degradation_deltas(
        degradation_totals(scrape_before),
        degradation_totals(scrape_after),
        sorted(set(scrape_before) | set(scrape_after)),
    )
    counts.failed_resets = count_failed_resets(reset)
    return counts
