"""Host and process sampling with psutil into system_metrics rows (ts_s, source, metric, value).

Sources: "host" (cpu_percent over the interval, memory_used_bytes, memory_percent), "client" (this
process: cpu_percent, rss_bytes), and one source per known server process ("server:<name>":
cpu_percent, rss_bytes, children included). A process that is gone is dropped silently: the
target decides whether that is a failure. psutil's cpu_percent measures since the previous call, so
the first call only primes the counters.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import psutil

RowSource = Callable[[], list[dict]]


class SystemSampler:
    """`extra_sources` are further row producers sampled on the same tick (GPU via NVML, PCP)."""

    def __init__(
        self,
        server_pids: dict[str, int],
        now_s: Callable[[], float],
        extra_sources: tuple[RowSource, ...] = (),
    ):
        self.now_s = now_s
        self.extra_sources = extra_sources
        self.client = psutil.Process(os.getpid())
        self.servers: dict[str, psutil.Process] = {}
        for name, pid in server_pids.items():
            try:
                self.servers[name] = psutil.Process(pid)
            except psutil.Error:
                continue
        self._prime()

    def _prime(self) -> None:
        psutil.cpu_percent(interval=None)
        self.client.cpu_percent(interval=None)
        for proc in self._server_processes():
            proc.cpu_percent(interval=None)

    def _server_processes(self):
        for proc in self.servers.values():
            yield proc
            try:
                yield from proc.children(recursive=True)
            except psutil.Error:
                continue

    def sample(self) -> list[dict]:
        ts_s = self.now_s()
        memory = psutil.virtual_memory()
        rows = [
            _row(ts_s, "host", "cpu_percent", psutil.cpu_percent(interval=None)),
            _row(ts_s, "host", "memory_used_bytes", memory.total - memory.available),
            _row(ts_s, "host", "memory_percent", memory.percent),
            _row(ts_s, "client", "cpu_percent", self.client.cpu_percent(interval=None)),
            _row(ts_s, "client", "rss_bytes", self.client.memory_info().rss),
        ]
        for name, proc in list(self.servers.items()):
            rows.extend(self._server_rows(ts_s, name, proc))
        for source in self.extra_sources:
            rows.extend(source())
        return rows

    def _server_rows(self, ts_s: float, name: str, proc: psutil.Process) -> list[dict]:
        try:
            family = [proc] + proc.children(recursive=True)
            cpu = rss = 0.0
            for member in family:
                try:
                    cpu += member.cpu_percent(interval=None)
                    rss += member.memory_info().rss
                except psutil.Error:
                    continue
        except psutil.Error:
            self.servers.pop(name, None)
            return []
        source = f"server:{name}"
        return [_row(ts_s, source, "cpu_percent", cpu), _row(ts_s, source, "rss_bytes", rss)]

    async def run(
        self, stop: asyncio.Event, interval_s: float, on_rows: Callable[[list[dict]], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while not stop.is_set():
            tick += 1
            try:
                await asyncio.wait_for(
                    stop.wait(), timeout=max(0.0, start + tick * interval_s - loop.time())
                )
            except TimeoutError:
                pass
            on_rows(self.sample())


def _row(ts_s: float, source: str, metric: str, value: float) -> dict:
    return {"ts_s": ts_s, "source": source, "metric": metric, "value": float(value)}
