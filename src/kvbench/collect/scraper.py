"""Server-metrics scraping: every `interval_s`, GET each /metrics URL and keep every sample.

Rows go to `server_metrics.parquet` (ts_s, source, metric, labels-json with sorted keys, value).
`*_created` samples (series creation timestamps) are dropped: they never change and would double
the row count. A failed scrape (connection refused, timeout, non-200, parse error) is counted per
source and the loop goes on; `ScrapeStats` says how many scrapes failed and the last error.
Deadlines are absolute (start + k * interval_s), so a slow scrape does not make the series drift.
A source URL may be a `MetricsSource`: a str that also carries request headers and TLS files (a
pod's /metrics through the Kubernetes API server's proxy needs the kubeconfig's credentials).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from kvbench.collect.prometheus import PrometheusParseError, Sample, parse_metrics


class MetricsSource(str):
    """A /metrics URL plus what fetching it needs. It is a `str` (the URL), so every place that takes
    `dict[str, str]` sources keeps working and what gets serialised (cell.json `sources`) is the URL
    alone, never the credentials. Copies (copy/deepcopy/pickle) keep the extra attributes."""

    headers: dict[str, str]
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    verify_tls: bool

    def __new__(
        cls,
        url: str,
        headers: dict[str, str] | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        verify_tls: bool = True,
    ):
        source = super().__new__(cls, url)
        source.headers = dict(headers or {})
        source.ca_file, source.cert_file, source.key_file = ca_file, cert_file, key_file
        source.verify_tls = verify_tls
        return source


def request_options(url: str) -> dict:
    """aiohttp `get` keyword arguments for a source: headers and TLS for a MetricsSource, none for a plain URL."""
    if not isinstance(url, MetricsSource):
        return {}
    options: dict = {"headers": dict(url.headers)}
    if not url.verify_tls:
        options["ssl"] = False
    elif url.ca_file or url.cert_file:
        context = ssl.create_default_context(cafile=url.ca_file)
        if url.cert_file:
            context.load_cert_chain(url.cert_file, url.key_file)
        options["ssl"] = context
    return options


@dataclass
class ScrapeStats:
    ok: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "scrapes_ok": dict(self.ok),
            "scrapes_failed": dict(self.failed),
            "last_error": dict(self.last_error),
        }


# A page's label sets repeat on every scrape: their JSON text is kept (emptied when it grows big).
_LABELS_JSON: dict[tuple[tuple[str, str], ...], str] = {}
_LABELS_JSON_MAX = 100_000


def labels_json(labels: dict[str, str]) -> str:
    """The labels as compact JSON with sorted keys (the rows' `labels` column)."""
    key = tuple(sorted(labels.items()))
    text = _LABELS_JSON.get(key)
    if text is None:
        text = json.dumps(labels, sort_keys=True, separators=(",", ":"))
        if len(_LABELS_JSON) >= _LABELS_JSON_MAX:
            _LABELS_JSON.clear()
        _LABELS_JSON[key] = text
    return text


def sample_rows(ts_s: float, source: str, samples: list[Sample]) -> list[dict]:
    return [
        {
            "ts_s": ts_s,
            "source": source,
            "metric": s.name,
            "labels": labels_json(s.labels),
            "value": s.value,
        }
        for s in samples
        if not s.name.endswith("_created")
    ]


async def fetch_samples(session: aiohttp.ClientSession, url: str, timeout_s: float) -> list[Sample]:
    """One scrape; raises on any failure (the caller counts it)."""
    async with session.get(
        url, timeout=aiohttp.ClientTimeout(total=timeout_s), **request_options(url)
    ) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return parse_metrics(await response.text())


class MetricsScraper:
    """Scrapes `sources` (name -> URL) until `stop` is set; hands rows to `on_rows`."""

    def __init__(
        self,
        sources: dict[str, str],
        interval_s: float,
        now_s: Callable[[], float],
        on_rows: Callable[[list[dict]], None],
        timeout_s: float | None = None,
    ):
        self.sources = dict(sources)
        self.interval_s = interval_s
        self.now_s = now_s
        self.on_rows = on_rows
        self.timeout_s = timeout_s if timeout_s is not None else max(0.5, min(5.0, interval_s))
        self.stats = ScrapeStats()

    async def scrape_once(self, session: aiohttp.ClientSession) -> dict[str, list[Sample]]:
        """Scrape every source concurrently; returns the samples of those that answered."""
        names = list(self.sources)
        results = await asyncio.gather(
            *(fetch_samples(session, self.sources[n], self.timeout_s) for n in names),
            return_exceptions=True,
        )
        ts_s = self.now_s()
        answered: dict[str, list[Sample]] = {}
        for name, result in zip(names, results):
            if isinstance(result, BaseException):
                self._count_failure(name, result)
                continue
            self.stats.ok[name] = self.stats.ok.get(name, 0) + 1
            answered[name] = result
            self.on_rows(sample_rows(ts_s, name, result))
        return answered

    async def run(self, stop: asyncio.Event) -> None:
        if not self.sources:
            await stop.wait()
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with aiohttp.ClientSession() as session:
            tick = 0
            while not stop.is_set():
                await self.scrape_once(session)
                tick += 1
                delay = start + tick * self.interval_s - loop.time()
                if delay < 0:  # fell behind: skip the missed ticks instead of bursting
                    tick += int(-delay // self.interval_s) + 1
                    delay = start + tick * self.interval_s - loop.time()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
                except TimeoutError:
                    pass
            await self.scrape_once(session)  # a final sample closes the window

    def _count_failure(self, name: str, err: BaseException) -> None:
        self.stats.failed[name] = self.stats.failed.get(name, 0) + 1
        kind = type(err).__name__
        text = str(err).splitlines()[0] if str(err) else kind
        self.stats.last_error[name] = (
            text if isinstance(err, (PrometheusParseError, RuntimeError)) else f"{kind}: {text}"
        )
