"""GPU sampling through NVML (the `nvidia-ml-py` optional extra: `pip install kvbench[gpu]`).

Contract: `open_gpu_sampler(now_s)` imports pynvml lazily and returns None when the module is
absent, NVML does not initialise (no driver) or there is no GPU; otherwise a `GpuSampler` whose
`sample()` gives system_metrics rows (ts_s, source "gpu:<index>", metric, value) per device:
utilization_percent, memory_utilization_percent, memory_used_bytes, memory_total_bytes, power_watts,
pcie_tx_bytes_per_s, pcie_rx_bytes_per_s (the last three where the device reports them). `close()`
shuts NVML down. The NVML module is passed in, so tests use a fake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class GpuSampler:
    def __init__(self, nvml: Any, now_s: Callable[[], float]):
        self.nvml = nvml
        self.now_s = now_s
        self.handles = [
            nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())
        ]

    def sample(self) -> list[dict]:
        ts_s = self.now_s()
        rows: list[dict] = []
        for index, handle in enumerate(self.handles):
            source = f"gpu:{index}"
            for metric, read in self._readers(handle):
                try:
                    value = read()
                except self.nvml.NVMLError:  # not supported on this device: leave the metric out
                    continue
                rows.append(
                    {"ts_s": ts_s, "source": source, "metric": metric, "value": float(value)}
                )
        return rows

    def _readers(self, handle: Any) -> list[tuple[str, Callable[[], float]]]:
        nvml = self.nvml
        return [
            ("utilization_percent", lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            (
                "memory_utilization_percent",
                lambda: nvml.nvmlDeviceGetUtilizationRates(handle).memory,
            ),
            ("memory_used_bytes", lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used),
            ("memory_total_bytes", lambda: nvml.nvmlDeviceGetMemoryInfo(handle).total),
            (
                "power_watts",
                lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            ),  # NVML: milliwatts
            (
                "pcie_tx_bytes_per_s",
                lambda: (
                    nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_TX_BYTES) * 1024.0
                ),
            ),
            (
                "pcie_rx_bytes_per_s",
                lambda: (
                    nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_RX_BYTES) * 1024.0
                ),
            ),
        ]

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


def open_gpu_sampler(now_s: Callable[[], float], nvml: Any = None) -> GpuSampler | None:
    if nvml is None:
        try:
            import pynvml

            nvml = pynvml
        except ImportError:
            return None
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None
    sampler = GpuSampler(nvml, now_s)
    if not sampler.handles:
        sampler.close()
        return None
    return sampler
