"""Client self-monitoring: is the load generator itself keeping up?

- event-loop lag: a periodic timer asks to wake every `interval_s`; how late it wakes is the lag;
- dispatch lag: sent - scheduled per request (fed in by the strategy);
- client CPU %: psutil on this process, sampled every `cpu_interval_s`.
Samples come back as (ts_s, "client", metric, value) tuples for system_metrics.parquet; the
dispatch lag is emitted as the max per sampling tick (one row per tick, not per request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import psutil

SOURCE = "client"


class ClientMonitor:
    def __init__(
        self, now_s: Callable[[], float], *, interval_s: float = 0.1, cpu_interval_s: float = 1.0
    ) -> None:
        self._now_s = now_s
        self._interval_s = interval_s
        self._cpu_interval_s = cpu_interval_s
        self._process = psutil.Process()
        self._task: asyncio.Task | None = None
        self.loop_lag_ms: list[float] = []
        self.dispatch_lag_ms: list[float] = []
        self.cpu_percent: list[float] = []
        self.samples: list[tuple[float, str, str, float]] = []
        self._tick_dispatch_max_ms: float | None = None

    def start(self) -> None:
        self._process.cpu_percent(None)  # first call primes psutil's counter
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._sample_cpu()

    def on_dispatch(self, lag_ms: float) -> None:
        self.dispatch_lag_ms.append(lag_ms)
        if self._tick_dispatch_max_ms is None or lag_ms > self._tick_dispatch_max_ms:
            self._tick_dispatch_max_ms = lag_ms

    async def _run(self) -> None:
        next_cpu = time.perf_counter() + self._cpu_interval_s
        while True:
            asked = time.perf_counter() + self._interval_s
            await asyncio.sleep(self._interval_s)
            woke = time.perf_counter()
            lag_ms = max(0.0, (woke - asked) * 1000.0)
            self.loop_lag_ms.append(lag_ms)
            ts_s = self._now_s()
            self.samples.append((ts_s, SOURCE, "event_loop_lag_ms", lag_ms))
            if self._tick_dispatch_max_ms is not None:
                self.samples.append((ts_s, SOURCE, "dispatch_lag_ms", self._tick_dispatch_max_ms))
                self._tick_dispatch_max_ms = None
            if woke >= next_cpu:
                self._sample_cpu()
                next_cpu = woke + self._cpu_interval_s

    def _sample_cpu(self) -> None:
        percent = self._process.cpu_percent(None)
        self.cpu_percent.append(percent)
        self.samples.append((self._now_s(), SOURCE, "cpu_percent", percent))
        rss = self._process.memory_info().rss
        self.samples.append((self._now_s(), SOURCE, "rss_bytes", float(rss)))

    def stats(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        out.update(_quantiles("dispatch_lag_ms", self.dispatch_lag_ms))
        out.update(_quantiles("event_loop_lag_ms", self.loop_lag_ms))
        out["client_cpu_percent_mean"] = (
            float(np.mean(self.cpu_percent)) if self.cpu_percent else None
        )
        out["client_cpu_percent_max"] = (
            float(np.max(self.cpu_percent)) if self.cpu_percent else None
        )
        return out


def _quantiles(name: str, values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"{name}_p50": None, f"{name}_p99": None, f"{name}_max": None}
    arr = np.asarray(values)
    return {
        f"{name}_p50": float(np.percentile(arr, 50)),
        f"{name}_p99": float(np.percentile(arr, 99)),
        f"{name}_max": float(arr.max()),
    }
