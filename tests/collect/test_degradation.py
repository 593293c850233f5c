"""Degradation counts of a cell from the servers' counters scraped before and after its load."""

from kvbench.collect.degradation import (
    count_failed_resets,
    degradation_deltas,
    degradation_totals,
    measure_degradation,
)
from kvbench.collect.prometheus import parse_metrics
from kvbench.results.cell import DegradationCounts
from kvbench.results.deployment import ComponentReset, ResetResult

ENGINE_BEFORE = """
# TYPE kvbench:lmcache_remote_errors counter
kvbench:lmcache_remote_errors_total{op="lookup"} 2
kvbench:lmcache_remote_errors_total{op="put"} 1
# TYPE kvbench:lmcache_remote_skipped counter
kvbench:lmcache_remote_skipped_total{op="lookup"} 0
"""
ENGINE_AFTER = """
# TYPE kvbench:lmcache_remote_errors counter
kvbench:lmcache_remote_errors_total{op="lookup"} 9
kvbench:lmcache_remote_errors_total{op="put"} 4
# TYPE kvbench:lmcache_remote_skipped counter
kvbench:lmcache_remote_skipped_total{op="lookup"} 40
"""
ROUTER_BEFORE = """
# TYPE kvbench_router_endpoint_ejections counter
kvbench_router_endpoint_ejections_total{endpoint="a",reason="connect"} 1
kvbench_router_endpoint_ejections_total{endpoint="b",reason="connect"} 0
# TYPE kvbench_router_kv_events_lost counter
kvbench_router_kv_events_lost_total 50
"""
ROUTER_AFTER = """
# TYPE kvbench_router_endpoint_ejections counter
kvbench_router_endpoint_ejections_total{endpoint="a",reason="connect"} 2
kvbench_router_endpoint_ejections_total{endpoint="b",reason="connect"} 1
# TYPE kvbench_router_kv_events_lost counter
kvbench_router_kv_events_lost_total 3
"""


def scrape(**texts):
    return {name: parse_metrics(text) if "\n" in text else text for name, text in texts.items()}


def test_increases_are_summed_over_label_sets_and_sources():
    before = degradation_totals(scrape(engine=ENGINE_BEFORE, router=ROUTER_BEFORE))
    after = degradation_totals(scrape(engine=ENGINE_AFTER, router=ROUTER_AFTER))
    counts = degradation_deltas(before, after, ["engine", "router"])
    assert counts.store_errors == 10  # (9 - 2) + (4 - 1)
    assert counts.store_skipped == 40
    assert counts.engine_ejections == 2
    assert counts.kv_events_lost == 3  # went down: the router restarted, 3 since then
    assert counts.index_lookup_failures is None  # nobody exports it: not measured, not 0
    assert counts.problems() == {
        "store_errors": 10,
        "store_skipped": 40,
        "engine_ejections": 2,
        "kv_events_lost": 3,
    }


def test_a_source_that_failed_is_listed_not_counted_as_clean():
    before = degradation_totals(scrape(engine=ENGINE_BEFORE, router="ClientConnectorError: down"))
    after = degradation_totals(scrape(engine=ENGINE_BEFORE, router=ROUTER_AFTER))
    counts = degradation_deltas(before, after, ["engine", "router"])
    assert counts.unscraped_sources == ["router"]
    assert counts.engine_ejections is None and counts.store_errors == 0


def test_a_vllm_without_kvbench_counters_measures_nothing():
    text = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 3\n"
    totals = degradation_totals(scrape(engine=text))
    assert degradation_deltas(totals, totals, ["engine"]) == DegradationCounts()


def test_failed_resets_are_counted_from_the_reset_result():
    assert count_failed_resets(None) is None
    reset = ResetResult(
        components={
            "engine-0": ComponentReset(reset=True),
            "engine-1": ComponentReset(reset=False, error="HTTP 503"),
            "router": ComponentReset(reset=False, note="approximate index: no reset API"),
        }
    )
    assert count_failed_resets(reset) == 1  # the router holds no KV: not counted


def test_measure_degradation_combines_scrapes_and_the_reset():
    counts = measure_degradation(
        scrape(engine=ENGINE_BEFORE), scrape(engine=ENGINE_AFTER), ResetResult()
    )
    assert counts.store_errors == 10 and counts.failed_resets is None
