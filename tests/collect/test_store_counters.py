"""The KV store's own refusals (INFO counters of a real Redis / Valkey) become degradation counts."""

from __future__ import annotations

import pandas as pd
import pytest
import redis

from kvbench.analysis.degradation_checks import check_degradation
from kvbench.analysis.load import CellData
from kvbench.analysis.validity import CheckStatus
from kvbench.collect.degradation import measure_degradation
from kvbench.collect.store_counters import (
    STORE_SOURCE,
    counter_value,
    read_store_samples,
    redis_url_of,
    store_page,
)
from kvbench.emulator.stores import KVStoreServer, free_port
from kvbench.results.cell import CellInfo, DegradationCounts

MAXMEMORY_BYTES = 2 * 1024 * 1024
VALUE_BYTES = 3 * 1024 * 1024  # larger than the whole budget: refused under any policy


@pytest.fixture(params=["redis", "valkey"])
def small_store(request):
    with KVStoreServer(
        request.param, maxmemory_bytes=MAXMEMORY_BYTES, maxmemory_policy="noeviction"
    ) as server:
        yield server


def _write(server: KVStoreServer, n_values: int, value_bytes: int) -> int:
    """SETs n values; returns how many the server refused with an OOM error."""
    client = redis.Redis.from_url(server.redis_url)
    refused = 0
    try:
        for i in range(n_values):
            try:
                client.set(f"chunk-{i}", b"x" * value_bytes)
            except redis.exceptions.OutOfMemoryError:  # the server's "-OOM ..." reply
                refused += 1
    finally:
        client.close()
    return refused


def test_writes_the_store_refused_are_counted_over_the_cell(small_store):
    _write(small_store, 2, VALUE_BYTES)  # refused before the cell: not the cell's
    before = store_page(small_store.url)
    assert _write(small_store, 5, 1024) == 0  # small writes fit
    refused = _write(small_store, 3, VALUE_BYTES)
    after = store_page(small_store.url)
    assert refused == 3
    counts = measure_degradation(before, after, None)
    assert counts.store_writes_refused == 3
    assert counts.store_connections_rejected == 0
    assert counts.unscraped_sources == []
    # no engine or router counters in these scrapes: those kinds stay unmeasured
    assert counts.store_errors is None and counts.index_lookup_failures is None


def test_a_store_that_cannot_be_read_is_unscraped_not_clean():
    url = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    samples = read_store_samples(url)
    assert isinstance(samples, str) and "Error" in samples
    counts = measure_degradation(store_page(url), store_page(url), None)
    assert counts.unscraped_sources == [STORE_SOURCE]
    assert counts.store_writes_refused is None


def test_no_store_gives_no_source():
    assert store_page(None) == {}


def test_store_urls_map_to_the_redis_protocol():
    assert redis_url_of("valkey://127.0.0.1:6400") == "redis://127.0.0.1:6400"
    assert redis_url_of("redis://127.0.0.1:6400") == "redis://127.0.0.1:6400"
    with pytest.raises(ValueError, match="scheme"):
        redis_url_of("memcached://127.0.0.1:1")
    with pytest.raises(ValueError, match="no scheme"):
        redis_url_of("127.0.0.1:6379")


def test_info_fields_parse_as_redis_py_returns_them():
    assert counter_value({"errorstat_OOM": {"count": 4}}, "errorstat_OOM") == 4
    assert counter_value({"rejected_connections": 7}, "rejected_connections") == 7
    assert counter_value({}, "errorstat_OOM") == 0  # never counted yet
    assert counter_value({"errorstat_OOM": "count=2"}, "errorstat_OOM") == 2


def _cell(counts: DegradationCounts) -> CellData:
    info = CellInfo(
        model="m",
        base_scenario="lmcache-redis",
        level=4,
        repeat=0,
        cell_id="c0",
        scenario="lmcache-redis",
    )
    info.validity.degradation = counts
    empty = pd.DataFrame()
    return CellData(info, empty, empty, empty)


def test_refused_writes_flag_the_store_check_and_a_clean_store_says_what_was_counted():
    [flag] = check_degradation(_cell(DegradationCounts(store_writes_refused=12)))
    assert flag.name == "KV store available" and flag.status == CheckStatus.FLAG
    assert "12 store writes refused" in flag.evidence
    [ok] = check_degradation(
        _cell(DegradationCounts(store_writes_refused=0, store_connections_rejected=0))
    )
    assert ok.status == CheckStatus.OK
    # the evidence names what was measured, and only that (store errors were not)
    assert "0 store writes refused" in ok.evidence and "store errors" not in ok.evidence
