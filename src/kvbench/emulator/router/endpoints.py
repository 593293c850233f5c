"""The pool of engines behind the router: per-endpoint metrics scraped from `/metrics`, health.

Contract (GIE datastore + metrics refresh, as the router needs it):
- Every `refresh_interval_s` (GIE default 50 ms) each endpoint's `/metrics` is scraped with a short
  timeout. `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`
  (else the deprecated `vllm:gpu_cache_usage_perc`) and `vllm:cache_config_info`'s `block_size` /
  `num_gpu_blocks` labels are read; values of several label sets (engines) are summed (queues) or
  averaged (usage).
- Health (health.py): a refused / reset connection (scrape or proxy) ejects at once, so a dead
  engine is out within one scrape interval (50 ms); a scrape that times out marks the endpoint
  slow (score degraded, still routable); only one unresponsive for `unresponsive_eject_s` is
  ejected; an ejected endpoint comes back after `readmit_successes` good scrapes in a row.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from kvbench.emulator.router.health import EjectReason, EndpointHealth, HealthPolicy

log = logging.getLogger(__name__)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class EndpointMetrics:
    waiting_requests: int = 0
    running_requests: int = 0
    kv_cache_usage: float = 0.0  # 0..1
    block_size_tokens: int | None = None
    num_gpu_blocks: int | None = None


@dataclass
class Endpoint:
    """One engine. `address` (host:port) is its identity: llm-d keys pods by address."""

    url: str
    metrics: EndpointMetrics = field(default_factory=EndpointMetrics)
    health: EndpointHealth = field(default_factory=EndpointHealth)
    address: str = field(init=False)  # "host:port", from the URL
    host: str = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.address = parts.netloc
        self.host = parts.hostname or ""

    @property
    def ready(self) -> bool:
        return self.health.ready


def parse_metrics(text: str) -> EndpointMetrics:
    """vLLM's Prometheus text -> the fields the scorers use."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    metrics = EndpointMetrics()
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.group(1), match.group(3) or "", match.group(4)
        if name == "vllm:cache_config_info":
            _read_cache_info(dict(_LABEL.findall(labels)), metrics)
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        sums[name] = sums.get(name, 0.0) + number
        counts[name] = counts.get(name, 0) + 1
    metrics.waiting_requests = int(sums.get("vllm:num_requests_waiting", 0))
    metrics.running_requests = int(sums.get("vllm:num_requests_running", 0))
    usage_name = (
        "vllm:kv_cache_usage_perc"
        if "vllm:kv_cache_usage_perc" in sums
        else "vllm:gpu_cache_usage_perc"
    )
    if usage_name in sums:
        metrics.kv_cache_usage = sums[usage_name] / counts[usage_name]
    return metrics


def _read_cache_info(labels: dict[str, str], metrics: EndpointMetrics) -> None:
    for label, attr in (("block_size", "block_size_tokens"), ("num_gpu_blocks", "num_gpu_blocks")):
        try:
            setattr(metrics, attr, int(labels[label]))
        except (KeyError, ValueError):
            pass


# A scrape that failed because nothing answers the connection: the engine is down.
_DEAD_ERRORS = (
    aiohttp.ClientConnectorError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    ConnectionError,
)


class EndpointPool:
    """Holds the endpoints and runs the scrape loop. `clock` returns monotonic seconds."""

    def __init__(
        self,
        urls: list[str],
        clock: Callable[[], float],
        refresh_interval_s: float = 0.05,
        scrape_timeout_s: float = 0.2,
        policy: HealthPolicy = HealthPolicy(),
    ) -> None:
        self.endpoints = [Endpoint(url.rstrip("/")) for url in urls]
        self.clock = clock
        self.refresh_interval_s = refresh_interval_s
        self.scrape_timeout_s = scrape_timeout_s
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        for endpoint in self.endpoints:
            endpoint.health.policy = policy
            endpoint.health.created_s = clock()

    def ready_endpoints(self) -> list[Endpoint]:
        return [endpoint for endpoint in self.endpoints if endpoint.ready]

    def by_address(self, address: str) -> Endpoint | None:
        for endpoint in self.endpoints:
            if endpoint.address == address:
                return endpoint
        return None

    def resolve_pod(self, pod_id: str) -> str:
        """Map a KV-event topic's pod id (`ip:port` or bare `ip`) to an endpoint address."""
        if self.by_address(pod_id) is not None:
            return pod_id
        same_host = [e for e in self.endpoints if e.host == pod_id]
        return same_host[0].address if len(same_host) == 1 else pod_id

    def mark_connection_error(self, endpoint: Endpoint) -> None:
        """The proxy could not connect to the endpoint: it is down, eject it now."""
        self._log_ejection(endpoint, endpoint.health.connect_failed(), "connection refused/reset")

    def mark_slow(self, endpoint: Endpoint) -> None:
        """The proxy's connection was not accepted in time: busy, not dead (scored down)."""
        endpoint.health.request_timed_out()

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.scrape_timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        await self.scrape_all()
        self._task = asyncio.create_task(self._loop(), name="endpoint-scrape")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            await self.scrape_all()

    async def scrape_all(self) -> None:
        await asyncio.gather(*(self._scrape(endpoint) for endpoint in self.endpoints))

    async def _scrape(self, endpoint: Endpoint) -> None:
        assert self._session is not None
        health = endpoint.health
        try:
            async with self._session.get(endpoint.url + "/metrics") as response:
                if response.status != 200:
                    reason = health.scrape_http_error()
                    self._log_ejection(endpoint, reason, f"HTTP {response.status}")
                    return
                text = await response.text()
        except TimeoutError:
            reason = health.scrape_timed_out(self.clock())
            self._log_ejection(endpoint, reason, "no answer to /metrics")
            return
        except _DEAD_ERRORS as err:
            self._log_ejection(endpoint, health.connect_failed(), type(err).__name__)
            return
        except (aiohttp.ClientError, OSError) as err:
            reason = health.scrape_http_error()
            self._log_ejection(endpoint, reason, type(err).__name__)
            return
        endpoint.metrics = parse_metrics(text)
        if health.scrape_ok(self.clock()):
            log.info("endpoint %s ready", endpoint.url)

    def _log_ejection(self, endpoint: Endpoint, reason: EjectReason | None, cause: str) -> None:
        if reason is not None:
            log.warning("endpoint %s ejected (%s: %s)", endpoint.url, reason.value, cause)
