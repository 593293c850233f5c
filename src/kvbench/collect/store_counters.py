"""The KV store's own refusals, read from its INFO sections as counter samples.

A Redis / Valkey server that runs out of `maxmemory` under `noeviction` (or cannot evict enough
under an LRU policy) answers a write with `-OOM ...` and counts it in `INFO errorstats`
(`errorstat_OOM:count=N`); one that is out of client slots refuses connections and counts them in
`INFO stats` (`rejected_connections`). LMCache inside a real vLLM logs such a failure and goes on
(the chunk is simply not stored), and a real vLLM exports no counter for it: the store is the only
place that knows. kvbench started the store, so it can ask it.

Contract:
- `read_store_samples(url)` returns the counters below as `Sample`s named in `STORE_COUNTERS`
  (value 0 when the server has counted none yet), or the error text when the server could not be
  read, the same shape as one source of a /metrics scrape (collect/collector.snapshot);
- `store_page(url)` / `store_page_async(url)` wrap it as a one-source scrape under `STORE_SOURCE`,
  to be merged into the scrapes that collect/degradation.measure_degradation compares. They are
  read once before the cell's load and once after; the server's counters only grow while it runs,
  so the increase is what the cell's traffic was refused.
"""

from __future__ import annotations

import asyncio

from kvbench.collect.prometheus import Sample

STORE_SOURCE = "store"  # the source name the store's samples are filed under

# counter sample name -> (INFO section, field in it). `errorstat_OOM` holds "count=N".
STORE_COUNTERS: dict[str, tuple[str, str]] = {
    "kvbench_store_oom_refusals_total": ("errorstats", "errorstat_OOM"),
    "kvbench_store_rejected_connections_total": ("stats", "rejected_connections"),
}

READ_TIMEOUT_S = 3.0


def redis_url_of(store_url: str) -> str:
    """redis-py's URL for a store URL: `valkey://host:port` speaks the Redis protocol.

    Stricter than the router index's `normalize_address` (which does the rewrite): a store URL
    kvbench recorded always names its scheme, so one without, or with another, is an error."""
    from kvbench.emulator.router.index_redis import normalize_address

    scheme, sep, _ = store_url.partition("://")
    if not sep:
        raise ValueError(f"store url {store_url!r} has no scheme (redis:// or valkey://)")
    if scheme not in ("redis", "valkey", "rediss", "valkeys"):
        raise ValueError(f"store url {store_url!r}: scheme {scheme!r} is not redis or valkey")
    return normalize_address(store_url)


def counter_value(section: dict[str, object], field_name: str) -> float:
    """One INFO field as a number; absent means the server has counted none (0).

    redis-py parses `errorstat_OOM:count=3` into {"count": 3}; a plain field is a number."""
    value = section.get(field_name, 0)
    if isinstance(value, dict):
        value = value.get("count", 0)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.removeprefix("count=").split(",", 1)[0]
        return float(text)
    raise ValueError(f"INFO field {field_name} has an unexpected value {value!r}")


def read_store_samples(store_url: str) -> list[Sample] | str:
    """The store's refusal counters, or the error text when it could not be read."""
    import redis

    try:
        client = redis.Redis.from_url(
            redis_url_of(store_url),
            socket_timeout=READ_TIMEOUT_S,
            socket_connect_timeout=READ_TIMEOUT_S,
        )
        try:
            sections = {section: client.info(section) for section in ("errorstats", "stats")}
        finally:
            client.close()
        return [
            Sample(
                name,
                {},
                counter_value(sections[section], field_name),
                name[: -len("_total")],
                "counter",
            )
            for name, (section, field_name) in STORE_COUNTERS.items()
        ]
    except (redis.RedisError, OSError, ValueError) as err:
        return f"{type(err).__name__}: {err}"


def store_page(store_url: str | None) -> dict[str, list[Sample] | str]:
    """A one-source scrape of the store (empty when the scenario runs no store)."""
    if store_url is None:
        return {}
    return {STORE_SOURCE: read_store_samples(store_url)}


async def store_page_async(store_url: str | None) -> dict[str, list[Sample] | str]:
    return await asyncio.to_thread(store_page, store_url)
