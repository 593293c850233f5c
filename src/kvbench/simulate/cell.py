"""One cell in virtual time: prime -> measured level (with server-metric samples) -> verify.

Contract (the live cell's, experiment/cell_run.py, on a freshly built stack):
- the stack is built for this cell alone, so every cache starts empty: that IS the reset (the
  caller flushes the scenario's store and says so in the reset result);
- prime (spec.cache.prime): one single-token request per distinct prefix, concurrency 4, phase
  "prime"; the measured level starts when the last one finished;
- server metrics: every source's /metrics page (engines' vLLM metrics, the router's EPP metrics)
  rendered and parsed exactly as the live scraper parses it, at the level's start, every
  `interval_s` of virtual time, and once at the end; rows in the scraper's long format;
- verify: the first use of each prefix against the expected state, and the prefix-cache counter
  deltas over the level, from the same pages;
- degradation: the servers' degradation counters (collect/degradation.py) from a scrape after the
  prime and one after the level, the real store's INFO counters included (store_counters.py), as
  the live cell measures them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from kvbench.collect.degradation import measure_degradation
from kvbench.collect.prometheus import Sample
from kvbench.collect.scraper import sample_rows
from kvbench.collect.store_counters import store_page
from kvbench.emulator.api.server import _max_token_id
from kvbench.experiment import cache_state
from kvbench.loadgen.plan import LevelPlan, ProgressUpdate
from kvbench.results.cell import CacheProtocol, DegradationCounts
from kvbench.results.deployment import ResetResult
from kvbench.results.records import Phase, RequestRecord
from kvbench.simulate.client import SimClient
from kvbench.simulate.events import EventLoop
from kvbench.simulate.front import PromptFront
from kvbench.simulate.level import LevelOutcome, run_level
from kvbench.simulate.stack import SimStack
from kvbench.workload.types import Workload

PRIME_CONCURRENCY = 4
RowsSink = Callable[[list[dict]], None]


@dataclass(frozen=True)
class CellSettings:
    prime: bool
    verify: bool
    server_metrics: bool
    interval_s: float
    request_timeout_s: float
    api: str = "completions"  # load.api: "completions" or "chat"


@dataclass
class CellOutcome:
    protocol: CacheProtocol
    level: LevelOutcome
    scrapes: int
    num_steps: int
    events_run: int
    degradation: DegradationCounts | None = None


def registry_samples(registry: CollectorRegistry) -> list[Sample]:
    """What parsing the registry's /metrics text would give, read off the registry directly (the
    text exposition only formats these same names, labels and values)."""
    return [
        Sample(sample.name, dict(sample.labels), float(sample.value), family.name, family.type)
        for family in registry.collect()
        for sample in family.samples
    ]


def scrape(stack: SimStack) -> dict[str, list[Sample] | str]:
    """Every source's samples, as the live scraper gets them, read off the registries (the router's
    with its pool gauges refreshed, as its /metrics rendering does)."""
    pages: dict[str, list[Sample] | str] = {
        f"engine-{i}": registry_samples(engine.metrics.registry)
        for i, engine in enumerate(stack.engines)
    }
    pages["router"] = registry_samples(stack.router.metrics_registry())
    return pages


def prompt_front(stack: SimStack) -> PromptFront:
    """The engine servers' request front (every engine of a stack serves the same model)."""
    model = stack.engine_args[0].model
    return PromptFront(stack.tokenizer, stack.max_model_len, _max_token_id(model, stack.tokenizer))


class _Sampler:
    def __init__(self, loop: EventLoop, stack: SimStack, on_rows: RowsSink) -> None:
        self.loop, self.stack, self.on_rows = loop, stack, on_rows
        self.scrapes = 0

    def sample(self) -> None:
        ts_s = self.loop.now_s
        for name, samples in scrape(self.stack).items():
            assert not isinstance(samples, str)
            self.on_rows(sample_rows(ts_s, name, samples))
        self.scrapes += 1


def simulate_cell(
    loop: EventLoop,
    stack: SimStack,
    workload: Workload,
    plan: LevelPlan,
    cell_id: str,
    settings: CellSettings,
    reset_result: ResetResult | None,
    on_record: Callable[[RequestRecord], None],
    on_server_rows: RowsSink,
    on_progress: Callable[[ProgressUpdate], None] | None = None,
) -> CellOutcome:
    client = SimClient(
        loop,
        stack.router,
        stack.served_model_name,
        settings.request_timeout_s,
        stack.prompt_tokens_details,
        prompt_front(stack),
        settings.api,
    )
    running = [True]
    stack.router.start_refresh(lambda: running[0])
    protocol = CacheProtocol(
        reset_requested=reset_result is not None, prime_requested=settings.prime, reset=reset_result
    )
    primes = cache_state.prime_conversations(workload) if settings.prime else []
    if primes:
        prime_plan = LevelPlan(
            "concurrent",
            float(min(PRIME_CONCURRENCY, len(primes))),
            None,
            len(primes),
            seed=plan.seed,
            record_phase=Phase.PRIME,
        )
        result = run_level(loop, client, primes, prime_plan, cell_id, on_record)
        protocol.primed_prefixes = len(primes)
        protocol.prime_counts = dict(result.counts)
    protocol.expected_state = cache_state.expected_state(reset_result, primed=bool(primes))
    scrape_before = scrape(stack)
    store_before = store_page(stack.store_url)
    before = cache_state.counter_snapshot(scrape_before) if settings.verify else None
    sampler = _Sampler(loop, stack, on_server_rows)
    level_running = [True]
    if settings.server_metrics:
        loop.every(settings.interval_s, sampler.sample, lambda: level_running[0])
    first_use = cache_state.FirstUseTally()
    prefix_len = {c.prefix_group: len(c.prefix_token_ids) for c in workload.conversations}

    def measured_record(record: RequestRecord) -> None:
        first_use.observe(
            record.phase,
            record.prefix_group,
            record.sent_s,
            record.cached_tokens,
            prefix_len.get(record.prefix_group, 0),
        )
        on_record(record)

    level = run_level(
        loop, client, workload.conversations, plan, cell_id, measured_record, on_progress
    )
    level_running[0] = False
    if settings.server_metrics:
        sampler.sample()  # a final sample closes the window
    scrape_after = scrape(stack)
    store_after = store_page(stack.store_url)
    if settings.verify and before is not None:
        verdict = first_use.verdict(protocol.expected_state)
        after = cache_state.counter_snapshot(scrape_after)
        verdict["server_counters"] = cache_state.counter_deltas(before, after)
        verdict["failed_sources"] = after["failed_sources"]
        protocol.verify = verdict
    running[0] = False
    return CellOutcome(
        protocol,
        level,
        sampler.scrapes,
        sum(e.num_steps for e in stack.engines),
        loop.actions_run,
        measure_degradation(scrape_before | store_before, scrape_after | store_after, reset_result),
    )
