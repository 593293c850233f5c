"""The EPP's own Prometheus metrics, under GIE v1.2's names (pkg/epp/metrics/metrics.go).

One registry per router (no global state). Pool gauges are refreshed from the endpoint pool each
time /metrics is rendered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kvbench.emulator.router.endpoints import EndpointPool
from kvbench.emulator.router.health import EjectReason
from kvbench.emulator.router.subscriber import SubscriberStats

_DURATION_BUCKETS_S = (
    0.005,
    0.025,
    0.05,
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    1.0,
    1.25,
    1.5,
    2,
    3,
    4,
    5,
    6,
    8,
    10,
    15,
    20,
    30,
    45,
    60,
    120,
    180,
    240,
    300,
    360,
    480,
    600,
    900,
    1200,
    1800,
    2700,
    3600,
)
_SCHEDULER_BUCKETS_S = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
_HIT_RATIO_BUCKETS = tuple(round(0.1 * i, 1) for i in range(11))


class EppMetrics:
    def __init__(self, pool_name: str) -> None:
        self.pool_name = pool_name
        self._health: EndpointHealthCollector | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        model_labels = ["model_name", "target_model_name"]
        self.request_total = Counter(
            "inference_objective_request_total", "Requests per model.", model_labels, registry=r
        )
        self.request_error_total = Counter(
            "inference_objective_request_error_total",
            "Failed requests.",
            model_labels + ["error_code"],
            registry=r,
        )
        self.request_duration_s = Histogram(
            "inference_objective_request_duration_seconds",
            "End-to-end request latency.",
            model_labels,
            buckets=_DURATION_BUCKETS_S,
            registry=r,
        )
        self.running_requests = Gauge(
            "inference_objective_running_requests",
            "In-flight requests.",
            ["model_name"],
            registry=r,
        )
        self.scheduler_e2e_s = Histogram(
            "inference_extension_scheduler_e2e_duration_seconds",
            "Scheduling latency.",
            buckets=_SCHEDULER_BUCKETS_S,
            registry=r,
        )
        self.plugin_duration_s = Histogram(
            "inference_extension_plugin_duration_seconds",
            "Plugin latency.",
            ["extension_point", "plugin_type", "plugin_name"],
            buckets=_SCHEDULER_BUCKETS_S,
            registry=r,
        )
        self.prefix_indexer_size = Gauge(
            "inference_extension_prefix_indexer_size", "Entries in the prefix indexer.", registry=r
        )
        self.prefix_indexer_hit_ratio = Histogram(
            "inference_extension_prefix_indexer_hit_ratio",
            "Matched prefix fraction per request.",
            buckets=_HIT_RATIO_BUCKETS,
            registry=r,
        )
        self.ready_pods = Gauge("inference_pool_ready_pods", "Ready pods.", ["name"], registry=r)
        self.average_kv_cache_utilization = Gauge(
            "inference_pool_average_kv_cache_utilization",
            "Mean KV-cache usage of ready pods.",
            ["name"],
            registry=r,
        )
        self.average_queue_size = Gauge(
            "inference_pool_average_queue_size",
            "Mean waiting requests of ready pods.",
            ["name"],
            registry=r,
        )

    def render(self, pool: EndpointPool) -> bytes:
        self.refresh(pool)
        return generate_latest(self.registry)

    def refresh(self, pool: EndpointPool) -> None:
        """Set the pool gauges from the endpoints' latest metrics (what a /metrics page shows)."""
        if self._health is None:
            self._health = EndpointHealthCollector(pool)
            self.registry.register(self._health)
        ready = pool.ready_endpoints()
        self.ready_pods.labels(self.pool_name).set(len(ready))
        if ready:
            usage = sum(e.metrics.kv_cache_usage for e in ready) / len(ready)
            queue = sum(e.metrics.waiting_requests for e in ready) / len(ready)
        else:
            usage = queue = 0.0
        self.average_kv_cache_utilization.labels(self.pool_name).set(usage)
        self.average_queue_size.labels(self.pool_name).set(queue)


class EndpointHealthCollector:
    """kvbench's own endpoint-health series (GIE has none): read from the pool at each scrape.

    kvbench_router_endpoint_ready{endpoint}                     1 routable, 0 ejected
    kvbench_router_endpoint_slow{endpoint}                      1 while its last scrape timed out
    kvbench_router_endpoint_ejections_total{endpoint,reason}    reason: connect | http_status |
                                                                unresponsive
    kvbench_router_endpoint_readmissions_total{endpoint}
    kvbench_router_endpoint_slow_scrapes_total{endpoint}
    """

    def __init__(self, pool: EndpointPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "kvbench_router_endpoint_ready", "1 when routable.", labels=["endpoint"]
        )
        slow = GaugeMetricFamily(
            "kvbench_router_endpoint_slow",
            "1 while the latest /metrics scrape timed out (score degraded).",
            labels=["endpoint"],
        )
        ejections = CounterMetricFamily(
            "kvbench_router_endpoint_ejections",
            "Times the endpoint was taken out of routing, by reason.",
            labels=["endpoint", "reason"],
        )
        readmissions = CounterMetricFamily(
            "kvbench_router_endpoint_readmissions",
            "Times an ejected endpoint was routable again.",
            labels=["endpoint"],
        )
        slow_scrapes = CounterMetricFamily(
            "kvbench_router_endpoint_slow_scrapes",
            "/metrics scrapes that timed out.",
            labels=["endpoint"],
        )
        for endpoint in self.pool.endpoints:
            health, address = endpoint.health, endpoint.address
            ready.add_metric([address], 1.0 if health.ready else 0.0)
            slow.add_metric([address], 1.0 if health.slow else 0.0)
            for reason in EjectReason:
                ejections.add_metric([address, reason.value], health.ejections.get(reason.value, 0))
            readmissions.add_metric([address], health.readmissions)
            slow_scrapes.add_metric([address], health.slow_scrapes)
        yield from (ready, slow, ejections, readmissions, slow_scrapes)


class RouterDegradationCollector:
    """What the router could not do, cumulative for its life (kvbench's own series):

    kvbench_router_index_lookup_failures_total     KV-block index lookups that failed (store down,
                                                   timeout, circuit open): those requests were
                                                   routed with no cache prediction
    kvbench_router_kv_events_lost_total            KV-event messages never applied (gaps that no
                                                   replay covered): the index misses those blocks
    kvbench_router_kv_events_apply_failures_total  messages the index store failed to apply
    kvbench_router_kv_events_decode_errors_total   messages that could not be decoded
    """

    def __init__(self, scorers: Iterable[object], stats: Iterable[SubscriberStats]) -> None:
        """`stats`: each KV-event subscriber's (live) counters, read at every scrape."""
        self.scorers = list(scorers)
        self.stats = list(stats)

    def collect(self) -> Iterator[Metric]:
        lookups = sum(int(getattr(s, "lookup_failures", 0)) for s in self.scorers)
        stats = self.stats
        for name, value, help_text in (
            ("kvbench_router_index_lookup_failures", lookups, "Failed KV-block index lookups."),
            (
                "kvbench_router_kv_events_lost",
                sum(s.lost_messages for s in stats),
                "KV-event messages never applied (gaps no replay covered).",
            ),
            (
                "kvbench_router_kv_events_apply_failures",
                sum(s.apply_failures for s in stats),
                "KV-event messages the index store failed to apply.",
            ),
            (
                "kvbench_router_kv_events_decode_errors",
                sum(s.decode_errors for s in stats),
                "KV-event messages that could not be decoded.",
            ),
        ):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], value)
            yield family
