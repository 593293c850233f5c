"""/metrics of one emulated engine: vLLM 0.32's names, label sets and buckets, plus kvbench's own.

- Counters and gauges come from `Engine.stats()` at scrape time (the engine counts the way vLLM
  counts); request-level histograms are observed here from the driver's emulated timestamps.
- Every vLLM series carries labels `engine` and `model_name`, as real vLLM's do
  (`admission_rejections_total`: `model_name` only). The series set, types and labels are those of
  real vLLM 0.32 on the CPU build (tests diff them against a captured page), `_created` included.
- Series the emulator has no state for are exported at their idle values: multimodal cache
  (`mm_cache_*` 0), sleep state (`awake` 1), deferred waiting (0), admission rejections (0).
  `estimated_*_per_gpu_total` follow the scheduled tokens: 2 x linear params x tokens / TP
  (flops), streamed weight bytes per step / TP (reads), KV bytes of the new tokens / TP (writes).
- Connector metrics arrive as `"name|label=value,..." -> value`; a name ending in `_total` is a
  counter, anything else a gauge.
- kvbench's own: `kvbench:engine_step_lag_seconds` (histogram of step start - deadline),
  `kvbench:engine_step_lag_max_seconds` (max since start), `kvbench:engine_steps_total`,
  `kvbench:kv_events_dropped_total`.
Each server has its own CollectorRegistry (no global state).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.values import MutexValue

from kvbench.emulator.api.driver import RequestStream
from kvbench.emulator.api.metric_buckets import (
    ITERATION_TOKEN_BUCKETS,
    ITL_BUCKETS_S,
    REQUEST_LATENCY_BUCKETS_S,
    STEP_LAG_BUCKETS_S,
    TTFT_BUCKETS_S,
    buckets_1_2_5,
)
from kvbench.emulator.engine.interface import EngineStats, StepResult

PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
CACHED_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
_LABELS = ("engine", "model_name")
WAITING_REASONS = ("capacity", "deferred")
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
ADMISSION_REJECTION_REASONS = ("max_num_queued_reqs", "max_num_queued_tokens")


@dataclass(slots=True)
class StepWork:
    """Cumulative model work estimated from scheduled tokens (the estimated_* series)."""

    flops_per_gpu: float = 0.0
    read_bytes_per_gpu: float = 0.0
    write_bytes_per_gpu: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkModel:
    """Per-token and per-step costs of one model on one GPU (TP shard)."""

    flops_per_token: float
    read_bytes_per_step: float
    write_bytes_per_token: float

    def add(self, work: StepWork, num_tokens: int) -> None:
        work.flops_per_gpu += self.flops_per_token * num_tokens
        work.read_bytes_per_gpu += self.read_bytes_per_step
        work.write_bytes_per_gpu += self.write_bytes_per_token * num_tokens


def _parse_connector_key(key: str) -> tuple[str, dict[str, str]]:
    name, _, label_text = key.partition("|")
    labels = dict(pair.split("=", 1) for pair in label_text.split(",") if "=" in pair)
    return name, labels


class _EngineStatsCollector:
    """Renders EngineStats (read at scrape time) as vLLM's counters and gauges."""

    def __init__(
        self,
        stats: Callable[[], EngineStats],
        labels: dict[str, str],
        cache_info: dict[str, str],
        driver_stats: Callable[[], dict[str, float]],
        work: StepWork,
        created_s: float,
    ) -> None:
        self._stats = stats
        self._labels = labels
        self._cache_info = cache_info
        self._driver_stats = driver_stats
        self._work = work
        self._created_s = created_s

    def _gauge(
        self, name: str, doc: str, value: float, extra: dict[str, str] | None = None
    ) -> Metric:
        labels = {**self._labels, **(extra or {})}
        family = GaugeMetricFamily(name, doc, labels=list(labels))
        family.add_metric(list(labels.values()), value)
        return family

    def _counter(
        self, name: str, doc: str, values: dict[tuple, float] | float, label: str | None = None
    ) -> Metric:
        names = list(self._labels) + ([label] if label else [])
        family = CounterMetricFamily(name, doc, labels=names)
        items = values.items() if isinstance(values, dict) else [((), values)]
        for extra, value in items:
            family.add_metric(
                list(self._labels.values()) + list(extra), value, created=self._created_s
            )
        return family

    def _gauges(self, name: str, doc: str, label: str, values: dict[str, float]) -> Metric:
        family = GaugeMetricFamily(name, doc, labels=[*self._labels, label])
        for key, value in values.items():
            family.add_metric([*self._labels.values(), key], value)
        return family

    def collect(self) -> Iterable[Metric]:
        s = self._stats()
        work = self._work
        yield self._counter(
            "vllm:estimated_flops_per_gpu",
            "Estimated number of floating point operations per GPU (for Model Flops "
            "Utilization calculations).",
            work.flops_per_gpu,
        )
        yield self._counter(
            "vllm:estimated_read_bytes_per_gpu",
            "Estimated number of bytes read from memory per GPU (for Model Flops Utilization "
            "calculations).",
            work.read_bytes_per_gpu,
        )
        yield self._counter(
            "vllm:estimated_write_bytes_per_gpu",
            "Estimated number of bytes written to memory per GPU (for Model Flops Utilization "
            "calculations).",
            work.write_bytes_per_gpu,
        )
        yield self._gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            s.num_requests_running,
        )
        yield self._gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            s.num_requests_waiting,
        )
        yield self._gauges(
            "vllm:num_requests_waiting_by_reason",
            "Number of requests waiting to be processed, by reason.",
            "reason",
            {"capacity": s.num_requests_waiting, "deferred": 0.0},
        )
        yield self._gauges(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is "
            "awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
            "sleep_state",
            {"awake": 1.0, "weights_offloaded": 0.0, "discard_all": 0.0},
        )
        yield self._gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            s.kv_cache_usage_perc,
        )
        info = {
            **self._cache_info,
            "block_size": str(s.block_size),
            "num_gpu_blocks": str(s.num_gpu_blocks),
            "kv_cache_size_tokens": str(s.block_size * s.num_gpu_blocks),
        }
        labels = {**self._labels, **info}
        if "_block_size_resolved" in info:  # vLLM 0.32's labels: engine, no model_name
            del labels["model_name"]
        family = GaugeMetricFamily(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            labels=list(labels),
        )
        family.add_metric(list(labels.values()), 1.0)
        yield family
        yield from self._counters(s)
        yield from self._connector_metrics(s.connector_metrics)
        yield from self._driver_metrics()

    def _counters(self, s: EngineStats) -> Iterable[Metric]:
        c = self._counter
        yield c(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            s.prefix_cache_queries,
        )
        yield c(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            s.prefix_cache_hits,
        )
        yield c(
            "vllm:external_prefix_cache_queries",
            "External prefix cache queries from KV connector "
            "cross-instance cache sharing, in terms of number of queried tokens.",
            s.external_prefix_cache_queries,
        )
        yield c(
            "vllm:external_prefix_cache_hits",
            "External prefix cache hits from KV connector "
            "cross-instance cache sharing, in terms of number of cached tokens.",
            s.external_prefix_cache_hits,
        )
        yield c(
            "vllm:mm_cache_queries",
            "Multi-modal cache queries, in terms of number of queried items.",
            0,
        )
        yield c(
            "vllm:mm_cache_hits",
            "Multi-modal cache hits, in terms of number of cached items.",
            0,
        )
        yield c(
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            s.num_preemptions,
        )
        yield c("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens)
        yield c(
            "vllm:prompt_tokens_by_source",
            "Number of prompt tokens by source.",
            {(src,): s.prompt_tokens_by_source.get(src, 0) for src in PROMPT_SOURCES},
            "source",
        )
        cached = (
            sum(s.prompt_tokens_cached_by_source.values())
            or s.prefix_cache_hits + s.external_prefix_cache_hits
        )
        yield c(
            "vllm:prompt_tokens_cached",
            "Number of cached prompt tokens (local + external).",
            cached,
        )
        yield c(
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them.",
            {(src,): s.prompt_tokens_cached_by_source.get(src, 0) for src in CACHED_SOURCES},
            "source",
        )
        yield c(
            "vllm:generation_tokens", "Number of generation tokens processed.", s.generation_tokens
        )
        reasons: dict[tuple, float] = {(r,): s.request_success.get(r, 0) for r in FINISH_REASONS}
        yield c(
            "vllm:request_success",
            "Count of successfully processed requests.",
            reasons,
            "finished_reason",
        )
        rejections = CounterMetricFamily(
            "vllm:admission_rejections",
            "Requests rejected at admission (queue limits).",
            labels=["model_name", "reason"],
        )
        for reason in ADMISSION_REJECTION_REASONS:
            rejections.add_metric(
                [self._labels["model_name"], reason], 0.0, created=self._created_s
            )
        yield rejections

    def _connector_metrics(self, metrics: dict[str, float]) -> Iterable[Metric]:
        by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
        for key, value in metrics.items():
            name, labels = _parse_connector_key(key)
            by_name.setdefault(name, []).append((labels, value))
        for name, series in sorted(by_name.items()):
            label_names = list(self._labels) + sorted({k for labels, _ in series for k in labels})
            is_counter = name.endswith("_total")
            family_cls = CounterMetricFamily if is_counter else GaugeMetricFamily
            family = family_cls(
                name[: -len("_total")] if is_counter else name,
                "KV connector metric.",
                labels=label_names,
            )
            for labels, value in series:
                merged = {**self._labels, **labels}
                family.add_metric([merged.get(k, "") for k in label_names], value)
            yield family

    def _driver_metrics(self) -> Iterable[Metric]:
        d = self._driver_stats()
        yield self._gauge(
            "kvbench:engine_step_lag_max_seconds",
            "Largest step start lag behind its deadline since start.",
            d["lag_max_s"],
        )
        yield self._counter(
            "kvbench:engine_steps", "Engine steps run by the real-time driver.", d["steps"]
        )
        yield self._counter(
            "kvbench:kv_events_dropped",
            "KV event batches dropped on a full queue.",
            d["kv_events_dropped"],
        )


def observe_all(histogram: Histogram, values: list[float]) -> None:
    """`histogram.observe(v)` for every v, in order, with the same resulting samples: the sum
    gets each value added one at a time (the same float), each bucket its count. Read off
    prometheus_client's in-process values directly (the engine's hot path observes an inter-token
    gap per output token); any other value class (multiprocess mode) takes `observe` itself."""
    total, buckets = histogram._sum, histogram._buckets
    if type(total) is not MutexValue or not all(type(b) is MutexValue for b in buckets):
        for value in values:
            histogram.observe(value)
        return
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    with total._lock:
        acc = total._value
        for value in values:
            acc += value
            if value == value:  # observe counts a NaN in no bucket (it is <= no bound)
                counts[bisect_left(bounds, value)] += 1
        total._value = acc
    for bucket, count in zip(buckets, counts):
        if count:
            bucket.inc(count)


class ServerMetrics:
    """The per-server registry; also the driver's observer (steps, inter-token gaps, finishes)."""

    def __init__(
        self,
        stats: Callable[[], EngineStats],
        model_name: str,
        engine_label: str,
        max_model_len: int,
        cache_info: dict[str, str],
        kv_events_dropped: Callable[[], int] = lambda: 0,
        work_model: WorkModel | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        labels = {"engine": engine_label, "model_name": model_name}
        self.lag_max_s = 0.0
        self.num_steps = 0
        self._kv_events_dropped = kv_events_dropped
        self._work_model = work_model
        self.work = StepWork()
        self.registry.register(
            _EngineStatsCollector(
                stats, labels, cache_info, self._driver_stats, self.work, time.time()
            )
        )
        token_buckets = buckets_1_2_5(max_model_len)
        hist = self._histogram
        self._ttft = hist(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS_S,
            labels,
        )
        self._itl = hist(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            ITL_BUCKETS_S,
            labels,
        )
        self._tpot = hist(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS_S,
            labels,
        )
        self._e2e = hist(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS_S,
            labels,
        )
        self._queue = hist(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
            labels,
        )
        self._inference = hist(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
            labels,
        )
        self._prefill = hist(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
            labels,
        )
        self._decode = hist(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
            labels,
        )
        self._prompt_tokens = hist(
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            token_buckets,
            labels,
        )
        self._generation_tokens = hist(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            token_buckets,
            labels,
        )
        self._params_max_tokens = hist(
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            token_buckets,
            labels,
        )
        self._max_generation_tokens = hist(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            token_buckets,
            labels,
        )
        self._params_n = hist(
            "vllm:request_params_n",
            "Histogram of the n request parameter.",
            (1, 2, 5, 10, 20),
            labels,
        )
        self._request_preemptions = hist(
            "vllm:request_num_preemptions",
            "Number of preemptions per request.",
            buckets_1_2_5(max_model_len),
            labels,
        )
        self._kv_computed = hist(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            token_buckets,
            labels,
        )
        self._iteration_tokens = hist(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            ITERATION_TOKEN_BUCKETS,
            labels,
        )
        self._lag = hist(
            "kvbench:engine_step_lag_seconds",
            "Real-time driver: step start minus its absolute deadline.",
            STEP_LAG_BUCKETS_S,
            labels,
        )

    def _histogram(self, name: str, doc: str, buckets, labels: dict[str, str]):
        metric = Histogram(
            name, doc, labelnames=list(labels), buckets=buckets, registry=self.registry
        )
        return metric.labels(**labels)  # the one child this server ever uses

    def _driver_stats(self) -> dict[str, float]:
        return {
            "lag_max_s": self.lag_max_s,
            "steps": self.num_steps,
            "kv_events_dropped": self._kv_events_dropped(),
        }

    # ---- DriverObserver ----

    def observe_step(self, result: StepResult, start_s: float, end_s: float, lag_s: float) -> None:
        self.num_steps += 1
        # observe_all: the samples `observe` gives, without its per-bound scan (once per step)
        observe_all(self._lag, [max(0.0, lag_s)])
        if lag_s > self.lag_max_s:
            self.lag_max_s = lag_s
        if result.num_scheduled_tokens:
            observe_all(self._iteration_tokens, [result.num_scheduled_tokens])
            if self._work_model is not None:
                self._work_model.add(self.work, result.num_scheduled_tokens)

    def observe_request_group(self, n: int, max_generation_tokens: int) -> None:
        """One prompt of a finished HTTP request: its `n` and its longest choice's tokens."""
        self._params_n.observe(n)
        self._max_generation_tokens.observe(max_generation_tokens)

    def observe_itl(self, gaps_s: list[float]) -> None:
        observe_all(self._itl, gaps_s)

    def observe_finished(self, stream: RequestStream, end_s: float) -> None:
        """Per-request histograms, with vLLM's phase definitions (scheduled = first step that
        reported the request; prefill ends at the first token; decode runs to the last)."""
        num_output = len(stream.output_token_ids)
        self._e2e.observe(end_s - stream.arrival_s)
        self._prompt_tokens.observe(stream.num_prompt_tokens)
        self._generation_tokens.observe(num_output)
        self._params_max_tokens.observe(stream.request.max_tokens)
        self._request_preemptions.observe(stream.num_preemptions)
        if stream.scheduled_s is None or stream.first_token_s is None:
            return  # aborted before it produced a token
        last_token_s = stream.last_token_s or stream.first_token_s
        self._ttft.observe(stream.first_token_s - stream.arrival_s)
        self._queue.observe(max(0.0, stream.scheduled_s - stream.arrival_s))
        self._prefill.observe(stream.first_token_s - stream.scheduled_s)
        self._decode.observe(last_token_s - stream.first_token_s)
        self._inference.observe(last_token_s - stream.scheduled_s)
        self._kv_computed.observe(max(0, stream.num_prompt_tokens - stream.num_cached_tokens))
        if num_output > 1:
            self._tpot.observe((last_token_s - stream.first_token_s) / (num_output - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
