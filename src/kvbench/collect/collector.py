"""Collector: server-metrics scraper + system sampler on a thread of their own.

They run on their own asyncio loop in a daemon thread so that scraping and parsing (a few ms per
/metrics page) never delay the load generator's event loop. Rows are handed to the callbacks from
that thread; the callbacks must write to sinks that only the collector touches until `stop()`
returns (the cell's server/system PartWriters).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import aiohttp

from kvbench.collect.gpu import open_gpu_sampler
from kvbench.collect.pcp import start_pcp_sampler
from kvbench.collect.prometheus import Sample
from kvbench.collect.scraper import MetricsScraper, fetch_samples
from kvbench.collect.system import SystemSampler

RowsSink = Callable[[list[dict]], None]


class Collector:
    def __init__(
        self,
        sources: dict[str, str],
        server_pids: dict[str, int],
        interval_s: float,
        now_s: Callable[[], float],
        on_server_rows: RowsSink,
        on_system_rows: RowsSink,
        server_metrics: bool = True,
        system_metrics: bool = True,
    ):
        self.scraper = MetricsScraper(
            sources if server_metrics else {}, interval_s, now_s, on_server_rows
        )
        # GPU (NVML) and PCP (pmrep) only where present: each opener returns None otherwise.
        self.gpu = open_gpu_sampler(now_s) if system_metrics else None
        self.pcp = start_pcp_sampler(interval_s, now_s) if system_metrics else None
        extra = tuple(
            source
            for source in (self.gpu and self.gpu.sample, self.pcp and self.pcp.take_rows)
            if source
        )
        self.system = SystemSampler(server_pids, now_s, extra) if system_metrics else None
        self.interval_s = interval_s
        self.on_system_rows = on_system_rows
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="kvbench-collector", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)

    def stop(self, timeout_s: float = 15.0) -> dict:
        """Stop, wait for the final samples, return the scrape statistics."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        if self.pcp is not None:
            self.pcp.stop()
        if self.gpu is not None:
            self.gpu.close()
        stats = self.scraper.stats.as_dict()
        if self.error:
            stats["collector_error"] = self.error
        return stats

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        tasks = [self.scraper.run(self._stop)]
        if self.system is not None:
            tasks.append(self.system.run(self._stop, self.interval_s, self.on_system_rows))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        self.error = "; ".join(errors) or None


async def snapshot(
    sources: dict[str, str], timeout_s: float = 5.0
) -> dict[str, list[Sample] | str]:
    """One scrape of every source: samples, or the error text of a source that failed."""
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(fetch_samples(session, url, timeout_s) for url in sources.values()),
            return_exceptions=True,
        )
    return {
        name: (f"{type(r).__name__}: {r}" if isinstance(r, BaseException) else r)
        for name, r in zip(sources, results)
    }
