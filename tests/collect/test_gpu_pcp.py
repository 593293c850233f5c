"""GPU (NVML) and PCP samplers: nothing when absent, exact rows when present (fake NVML, fake pmrep)."""

import os
import stat
import time
from types import SimpleNamespace

from kvbench.collect.gpu import open_gpu_sampler
from kvbench.collect.pcp import start_pcp_sampler


class FakeNvml:
    NVML_PCIE_UTIL_TX_BYTES, NVML_PCIE_UTIL_RX_BYTES = 0, 1

    class NVMLError(Exception):
        pass

    def __init__(self, count):
        self.count, self.shut = count, False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=50 + handle, memory=20)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=3 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetPowerUsage(self, handle):
        return 350_500  # milliwatts

    def nvmlDeviceGetPcieThroughput(self, handle, counter):
        raise self.NVMLError("not supported")


def test_gpu_sampler_rows_per_device():
    nvml = FakeNvml(2)
    sampler = open_gpu_sampler(lambda: 12.5, nvml=nvml)
    rows = sampler.sample()
    assert {(r["source"], r["metric"]): r["value"] for r in rows if r["source"] == "gpu:1"} == {
        ("gpu:1", "utilization_percent"): 51.0,
        ("gpu:1", "memory_utilization_percent"): 20.0,
        ("gpu:1", "memory_used_bytes"): 3.0 * 2**30,
        ("gpu:1", "memory_total_bytes"): 80.0 * 2**30,
        ("gpu:1", "power_watts"): 350.5,
    }
    assert len(rows) == 10 and all(r["ts_s"] == 12.5 for r in rows)
    sampler.close()
    assert nvml.shut


def test_no_gpu_means_no_sampler():
    assert open_gpu_sampler(lambda: 0.0, nvml=FakeNvml(0)) is None
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert open_gpu_sampler(lambda: 0.0) is None


def test_no_pmrep_means_no_sampler(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert start_pcp_sampler(1.0, lambda: 0.0) is None


def test_pmrep_csv_becomes_rows(monkeypatch, tmp_path):
    fake = tmp_path / "pmrep"
    fake.write_text(
        '#!/bin/sh\necho \'"Time","kernel.all.cpu.user","kernel.all.load-1 minute"\'\n'
        'echo \'"05:00:01","",""\'\necho \'"05:00:02","12.5","0.75"\'\nexec sleep 30\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    sampler = start_pcp_sampler(1.0, lambda: 3.0)
    try:
        deadline = time.monotonic() + 10
        rows = []
        while len(rows) < 2 and time.monotonic() < deadline:
            rows += sampler.take_rows()
            time.sleep(0.02)
    finally:
        sampler.stop()
    assert rows == [
        {"ts_s": 3.0, "source": "pcp", "metric": "kernel.all.cpu.user", "value": 12.5},
        {"ts_s": 3.0, "source": "pcp", "metric": "kernel.all.load-1 minute", "value": 0.75},
    ]
    assert sampler.process.poll() is not None


def test_system_sampler_includes_extra_sources_on_each_tick():
    from kvbench.collect.system import SystemSampler

    gpu_rows = [{"ts_s": 1.0, "source": "gpu:0", "metric": "utilization_percent", "value": 42.0}]
    sampler = SystemSampler({}, now_s=lambda: 1.0, extra_sources=(lambda: list(gpu_rows),))
    rows = sampler.sample()
    assert gpu_rows[0] in rows
    assert {r["source"] for r in rows} >= {"host", "client", "gpu:0"}
