"""The pool of engines behind the router: per-endpoint metrics scraped from `/metrics`, health.

Contract (GIE datastore + metrics refresh, as the router needs it):
- Every `refresh_interval_s` (GIE default 50 ms) each endpoint's `/metrics` is scraped with a short
  timeout. `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc`
  (else the deprecated `vllm:gpu_cache_usage_perc`) and `vllm:cache_config_info`'s `block_size` /
  `num_gpu_blocks` labels are read; values of several label sets (engines) are summed (queues) or
  averaged (usage).
- An endpoint is ejected (not routable) after `failures_to_eject` consecutive failed scrapes or at
  once on a connection error seen by the proxy; one successful scrape re-admits it. With the
  defaults (50 ms interval, 200 ms timeout, 3 failures) a dead endpoint is ejected well within 1 s.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

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
    ready: bool = False
    consecutive_failures: int = 0
    last_scrape_ok_s: float | None = None
    address: str = field(init=False)  # "host:port", from the URL
    host: str = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.address = parts.netloc
        self.host = parts.hostname or ""


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


class EndpointPool:
    """Holds the endpoints and runs the scrape loop. `clock` returns monotonic seconds."""

    def __init__(
        self,
        urls: list[str],
        clock: Callable[[], float],
        refresh_interval_s: float = 0.05,
        scrape_timeout_s: float = 0.2,
        failures_to_eject: int = 3,
    ) -> None:
        self.endpoints = [Endpoint(url.rstrip("/")) for url in urls]
        self.clock = clock
        self.refresh_interval_s = refresh_interval_s
        self.scrape_timeout_s = scrape_timeout_s
        self.failures_to_eject = failures_to_eject
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None

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
        endpoint.ready = False
        endpoint.consecutive_failures = max(endpoint.consecutive_failures, self.failures_to_eject)

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
        try:
            async with self._session.get(endpoint.url + "/metrics") as response:
                if response.status != 200:
                    raise aiohttp.ClientResponseError(
                        response.request_info, (), status=response.status
                    )
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            self._record_failure(endpoint, err)
            return
        endpoint.metrics = parse_metrics(text)
        endpoint.consecutive_failures = 0
        endpoint.last_scrape_ok_s = self.clock()
        if not endpoint.ready:
            log.info("endpoint %s ready", endpoint.url)
        endpoint.ready = True

    def _record_failure(self, endpoint: Endpoint, err: BaseException) -> None:
        endpoint.consecutive_failures += 1
        if endpoint.ready and endpoint.consecutive_failures >= self.failures_to_eject:
            log.warning(
                "endpoint %s ejected after %d failed scrapes (%s)",
                endpoint.url,
                endpoint.consecutive_failures,
                type(err).__name__,
            )
            endpoint.ready = False
