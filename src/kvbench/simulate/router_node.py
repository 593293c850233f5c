"""The emulated llm-d endpoint picker on the virtual clock: the real scheduler (scorers, weights,
max-score picker with its seeded tie-break RNG), the real KV-block index (in memory, or the real
Redis / Valkey server) and the real EPP metrics; no HTTP.

Contract:
- endpoint metrics (queue, running, KV usage) are refreshed every `refresh_interval_s` of virtual
  time (GIE's 50 ms scrape), read from the engines directly, so scorers see values up to one
  interval old, as they do live; every engine is ready;
- `route(request, prompt_tokens)` runs one scheduling cycle plus PreRequest and returns the
  decision; its `scheduling_s` is the modelled scheduling time (`RouterTiming`: per prompt token
  for each prefix scorer, which hashes the prompt, and the precise one's index lookups), which
  the client adds before the engine gets the request (the live router schedules in wall time);
  `complete(decision)` is ResponseComplete (the proxy calls it when the response ended, either way);
- KV events of an engine step reach every KV-block index `kv_event_delay_s` after the step was
  planned (publish, ZMQ, subscriber), in publish order, with hashes as the subscriber decodes them;
  a Redis / Valkey index gets them written before it is next read, every batch delivered since the
  last read in one round trip (same writes, same order, see index_batch.py); a batch the index
  store fails to apply is lost and counted in `event_stats.apply_failures`
  (kvbench_router_kv_events_apply_failures_total, as live); the precise scorer's lookups on such
  an index and those writes go over a synchronous link (same commands, index_lookup.py,
  store_link.py);
- with a `decision_log`, every decision is one JSON line in the live router's format
  (`Decision.log_record`), `ts_s` in virtual seconds of the cell.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import IO

import orjson
from prometheus_client import CollectorRegistry

from kvbench.emulator.engine.interface import (
    AllBlocksCleared,
    BlockHash,
    BlockRemoved,
    BlockStored,
    KVEvent,
)
from kvbench.emulator.router.build import build_plugins
from kvbench.emulator.router.config import EppConfig
from kvbench.emulator.router.endpoints import EndpointMetrics, EndpointPool
from kvbench.emulator.router.events import apply_events, hash_as_uint64
from kvbench.emulator.router.index_memory import IndexUnavailable
from kvbench.emulator.router.index_redis import RedisIndex
from kvbench.emulator.router.metrics import EppMetrics, RouterDegradationCollector
from kvbench.emulator.router.precise import PrecisePrefixCacheScorer
from kvbench.emulator.router.prefix_approx import ApproxPrefixCacheScorer
from kvbench.emulator.router.request import RouterRequest
from kvbench.emulator.router.scheduler import Decision
from kvbench.emulator.router.subscriber import SubscriberStats
from kvbench.simulate.drive import CoroutineDriver
from kvbench.simulate.engine_node import SimEngine
from kvbench.simulate.events import EventLoop
from kvbench.simulate.hash_memo import HASH_MEMO
from kvbench.simulate.index_batch import PendingWrites
from kvbench.simulate.index_lookup import LinkedLookupIndex
from kvbench.simulate.store_link import StoreLink

GIE_REFRESH_INTERVAL_S = 0.05
DEFAULT_KV_EVENT_DELAY_S = 0.001
POOL_NAME = "kvbench-pool"
STORE_WALL_TIMEOUT_S = 30.0
_UINT64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class RouterTiming:
    refresh_interval_s: float = GIE_REFRESH_INTERVAL_S
    kv_event_delay_s: float = DEFAULT_KV_EVENT_DELAY_S
    # scheduling time per prompt token, fitted to the live router's decision log (scheduling_ms)
    approx_prefix_s_per_token: float = 0.085e-6  # prefix-cache-scorer: 0.9 ms at 10.6k tokens
    precise_prefix_s_per_token: float = 0.44e-6  # precise-prefix-cache-scorer: 4.7 ms at 10.6k

    def scheduling_s_per_token(self, scorers: list[object]) -> float:
        cost = 0.0
        for scorer in scorers:
            if isinstance(scorer, ApproxPrefixCacheScorer):
                cost += self.approx_prefix_s_per_token
            elif isinstance(scorer, PrecisePrefixCacheScorer):
                cost += self.precise_prefix_s_per_token
        return cost


def _as_uint64(hashes: list[BlockHash]) -> list[BlockHash]:
    """`[hash_as_uint64(h) for h in hashes]`, ints masked inline (the engine's hashes are ints)."""
    return [h & _UINT64 if type(h) is int else hash_as_uint64(h) for h in hashes]


def as_received(events: list[KVEvent]) -> list[KVEvent]:
    """Events as the subscriber decodes them off the wire: every block hash a uint64."""
    received: list[KVEvent] = []
    for event in events:
        if isinstance(event, BlockStored):
            parent = event.parent_block_hash
            received.append(
                BlockStored(
                    _as_uint64(event.block_hashes),
                    None if parent is None else hash_as_uint64(parent),
                    event.token_ids,
                    event.block_size,
                    event.lora_id,
                    event.medium,
                )
            )
        elif isinstance(event, BlockRemoved):
            received.append(BlockRemoved(_as_uint64(event.block_hashes), event.medium))
        elif isinstance(event, AllBlocksCleared):
            received.append(event)
    return received


class SimRouter:
    def __init__(
        self,
        loop: EventLoop,
        config: EppConfig,
        engines: list[SimEngine],
        seed: int,
        timing: RouterTiming = RouterTiming(),
    ) -> None:
        self.loop = loop
        self.engines = engines
        self.timing = timing
        self.metrics = EppMetrics(POOL_NAME)
        self.pool = EndpointPool([f"http://{e.address}" for e in engines], loop.clock)
        for endpoint in self.pool.endpoints:  # in process, every engine answers every scrape
            endpoint.health.ready = endpoint.health.ever_ready = True
        self.plugins = build_plugins(
            config, self.metrics, random.Random(seed), loop.clock, {}, self.pool.resolve_pod
        )
        self.plugins.scheduler.timer = loop.clock  # scheduling takes no virtual time
        self._pending: list[PendingWrites] = []
        self._links: dict[int, StoreLink] = {}  # id(RedisIndex) -> its synchronous link
        for index in self.plugins.indexes:
            if isinstance(index, RedisIndex):
                # Wall time is not virtual time: a round trip that is slow because this process is
                # busy must not count as a store fault (live, the deadline guards a frozen store).
                index.timeout_s = STORE_WALL_TIMEOUT_S
                link = self._link(index)
                self._pending.append(PendingWrites(index, link))
        for weighted in self.plugins.scheduler.scorers:
            if isinstance(weighted.scorer, PrecisePrefixCacheScorer):
                weighted.scorer.hash_memo = HASH_MEMO
                link = self._links.get(id(weighted.scorer.index))
                if link is not None:  # the same commands and answers, without loop turns
                    weighted.scorer.index = LinkedLookupIndex(link.index, link)
        self._pending_by_index = {id(p.index): p for p in self._pending}
        # the index clients' own calls (clear, close, a flush that clears) run on an asyncio loop;
        # scheduling and linked flushes never suspend (store_link.py)
        self.driver = CoroutineDriver(use_asyncio=bool(self._pending))
        self._sync = CoroutineDriver(use_asyncio=False)
        self._by_address = {e.address: e for e in engines}
        self.event_stats = SubscriberStats()  # in process: nothing is lost or undecodable
        self.metrics.registry.register(
            RouterDegradationCollector(
                (w.scorer for w in self.plugins.scheduler.scorers), [self.event_stats]
            )
        )
        self.decision_log: IO[bytes] | None = None
        self._s_per_token = timing.scheduling_s_per_token(
            [w.scorer for w in self.plugins.scheduler.scorers]
        )
        self.refresh_metrics()

    def _link(self, index: RedisIndex) -> StoreLink | None:
        try:
            link = self._links[id(index)] = StoreLink(index)
        except ValueError:  # a URL form the link does not speak: the index's own client
            return None
        return link

    # ---- endpoint metrics (GIE datastore refresh)
    def refresh_metrics(self) -> None:
        for endpoint in self.pool.endpoints:
            engine = self._by_address[endpoint.address].engine
            scheduler = engine.scheduler
            old = endpoint.metrics
            endpoint.metrics = EndpointMetrics(
                waiting_requests=len(scheduler.waiting),
                running_requests=len(scheduler.running),
                kv_cache_usage=engine.pool.usage(),
                block_size_tokens=old.block_size_tokens or engine.kv.block_size,
                num_gpu_blocks=old.num_gpu_blocks or engine.pool.num_gpu_blocks,
            )

    def start_refresh(self, active) -> None:
        self.loop.every(self.timing.refresh_interval_s, self.refresh_metrics, active)

    # ---- requests
    def route(self, request: RouterRequest, prompt_tokens: int = 0) -> tuple[Decision, SimEngine]:
        self.metrics.request_total.labels(request.model, request.model).inc()
        self.flush_index_writes()
        decision = self._sync.run(self.plugins.scheduler.schedule(request, self.pool.endpoints))
        decision.scheduling_s = self._s_per_token * prompt_tokens
        self.plugins.scheduler.pre_request(decision)
        if self.decision_log is not None:
            self.decision_log.write(orjson.dumps(decision.log_record(self.loop.now_s)) + b"\n")
        return decision, self._by_address[decision.chosen.address]

    def complete(self, decision: Decision, duration_s: float) -> None:
        self.plugins.scheduler.response_complete(decision)
        model = decision.request.model
        self.metrics.request_duration_s.labels(model, model).observe(duration_s)

    # ---- KV events
    @property
    def has_index(self) -> bool:
        return bool(self.plugins.indexes)

    def deliver_kv_events(
        self, pod: str, model: str, planned_s: float, events: list[KVEvent]
    ) -> None:
        received = as_received(events)
        resolved = self.pool.resolve_pod(pod)

        def apply() -> None:
            for index in self.plugins.indexes:
                pending = self._pending_by_index.get(id(index))
                if pending is not None:
                    pending.add(resolved, model, received)  # written before the next read
                    continue
                try:
                    self.driver.run(apply_events(index, resolved, model, received))
                except IndexUnavailable:
                    self.event_stats.apply_failures += 1  # live: counted, the batch is lost

        self.loop.at(planned_s + self.timing.kv_event_delay_s, apply)

    def flush_index_writes(self) -> None:
        """Write the Redis / Valkey indexes' pending batches (before anything reads them)."""
        for pending in self._pending:
            if pending:
                driver = self.driver if pending.needs_loop else self._sync
                self.event_stats.apply_failures += driver.run(pending.flush())

    @property
    def index_round_trips(self) -> int:
        return sum(p.round_trips for p in self._pending)

    def clear_indexes(self) -> None:
        self.flush_index_writes()
        for index in self.plugins.indexes:
            for engine in self.engines:
                self.driver.run(index.clear_pod(engine.address))

    def render_metrics(self) -> bytes:
        self.flush_index_writes()
        return self.metrics.render(self.pool)

    def metrics_registry(self) -> CollectorRegistry:
        """The EPP registry with its pool gauges refreshed, as a /metrics page would show it."""
        self.flush_index_writes()
        self.metrics.refresh(self.pool)
        return self.metrics.registry

    def close(self) -> None:
        self.flush_index_writes()
        for index in self.plugins.indexes:
            self.driver.run(index.close())
        for link in self._links.values():
            link.close()
        self.driver.close()
