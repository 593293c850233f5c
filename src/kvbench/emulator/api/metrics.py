"""/metrics of one emulated engine: vLLM 0.32's names, label sets and buckets, plus kvbench's own.

- Counters and gauges come from `Engine.stats()` at scrape time (the engine counts the way vLLM
  counts); request-level histograms are observed here from the driver's emulated timestamps.
- Every vLLM series carries labels `engine` and `model_name`, as real vLLM's do.
- Connector metrics arrive as `"name|label=value,..." -> value`; a name ending in `_total` is a
  counter, anything else a gauge.
- kvbench's own: `kvbench:engine_step_lag_seconds` (histogram of step start - deadline),
  `kvbench:engine_step_lag_max_seconds` (max since start), `kvbench:engine_steps_total`,
  `kvbench:kv_events_dropped_total`.
Each server has its own CollectorRegistry (no global state).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kvbench.emulator.api.driver import RequestStream
from kvbench.emulator.engine.interface import EngineStats, StepResult

TTFT_BUCKETS_S = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS_S = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_LATENCY_BUCKETS_S = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
STEP_LAG_BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
CACHED_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
_LABELS = ("engine", "model_name")


def buckets_1_2_5(max_value: int) -> list[int]:
    """vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, ... up to max_value."""
    out, exponent = [], 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return out
            out.append(value)
        exponent += 1


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
    ) -> None:
        self._stats = stats
        self._labels = labels
        self._cache_info = cache_info
        self._driver_stats = driver_stats

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
            family.add_metric(list(self._labels.values()) + list(extra), value)
        return family

    def collect(self) -> Iterable[Metric]:
        s = self._stats()
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
        yield self._gauge(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig", 1.0, info
        )
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
        reasons = {(r,): s.request_success.get(r, 0) for r in FINISH_REASONS}
        yield c(
            "vllm:request_success",
            "Count of successfully processed requests.",
            reasons,
            "finished_reason",
        )

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
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        labels = {"engine": engine_label, "model_name": model_name}
        self.lag_max_s = 0.0
        self.num_steps = 0
        self._kv_events_dropped = kv_events_dropped
        self.registry.register(_EngineStatsCollector(stats, labels, cache_info, self._driver_stats))
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
        self._lag.observe(max(0.0, lag_s))
        if lag_s > self.lag_max_s:
            self.lag_max_s = lag_s
        if result.num_scheduled_tokens:
            self._iteration_tokens.observe(result.num_scheduled_tokens)

    def observe_itl(self, gaps_s: list[float]) -> None:
        for gap in gaps_s:
            self._itl.observe(gap)

    def observe_finished(self, stream: RequestStream, end_s: float) -> None:
        """Per-request histograms, with vLLM's phase definitions (scheduled = first step that
        reported the request; prefill ends at the first token; decode runs to the last)."""
        num_output = len(stream.output_token_ids)
        self._e2e.observe(end_s - stream.arrival_s)
        self._prompt_tokens.observe(stream.num_prompt_tokens)
        self._generation_tokens.observe(num_output)
        self._params_max_tokens.observe(stream.request.max_tokens)
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
