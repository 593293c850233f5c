import asyncio

import pytest
from rich.console import Console

from kvbench.loadgen.monitor import ClientMonitor
from kvbench.loadgen.plan import ProgressUpdate
from kvbench.loadgen.progress import (
    CellProgress,
    progress_enabled,
    render_summary_table,
    summary_row,
)
from kvbench.results.records import RequestRecord


def _record(phase, status, ttft, out, end_s, itl):
    # the tokens arrive just before end_s (the ITL gaps end there), so the throughput rule (tokens
    # by arrival time inside the window) sees them where the request ended
    first_token_s = end_s - sum(itl) / 1000.0
    return RequestRecord(
        sent_s=first_token_s - (ttft or 0.0) / 1000.0,
        first_token_s=first_token_s,
        request_id="r",
        conversation_id="c",
        turn_index=0,
        cell_id="x",
        phase=phase,
        status=status,
        ttft_ms=ttft,
        output_tokens=out,
        end_s=end_s,
        itl_ms=itl,
    )


def test_summary_row_uses_measured_records_only():
    records = [
        _record("warmup", "ok", 1000.0, 50, 0.5, [9.0]),
        _record("measure", "ok", 10.0, 4, 1.5, [1.0, 2.0, 3.0]),
        _record("measure", "ok", 30.0, 6, 2.0, [5.0]),
        _record("measure", "error", None, 0, 2.5, []),
        _record("cooldown", "ok", 99.0, 40, 3.5, []),
    ]
    row = summary_row("cell-a", records, measure_start_s=1.0, measure_end_s=3.0)
    assert row.requests_per_s == pytest.approx(2 / 2.0)
    assert row.output_tokens_per_s == pytest.approx(10 / 2.0)
    assert row.ttft_p50_ms == pytest.approx(20.0)
    assert row.itl_p50_ms == pytest.approx(2.5)
    assert row.errors == 1
    console = Console(record=True, width=120)
    console.print(render_summary_table([row]))
    text = console.export_text()
    assert "cell-a" in text and "20.0" in text and "5" in text


def test_progress_off_in_ci(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    monkeypatch.setenv("CI", "true")
    assert progress_enabled(Tty()) is False
    monkeypatch.setenv("CI", "false")
    assert progress_enabled(Tty()) is True
    with CellProgress("cell", 10, enabled=False) as bar:  # disabled bar accepts updates silently
        bar.update(ProgressUpdate("cell", 1, 1, 0, 0, 0.1))


async def test_monitor_samples_loop_lag_dispatch_and_cpu():
    monitor = ClientMonitor(lambda: 1.0, interval_s=0.01, cpu_interval_s=0.02)
    monitor.start()
    monitor.on_dispatch(3.0)
    monitor.on_dispatch(7.0)
    await asyncio.sleep(0.08)
    await monitor.stop()
    stats = monitor.stats()
    assert stats["dispatch_lag_ms_max"] == 7.0
    assert (
        stats["event_loop_lag_ms_p50"] is not None and stats["client_cpu_percent_mean"] is not None
    )
    metrics = {m for _, source, m, _ in monitor.samples if source == "client"}
    assert {"event_loop_lag_ms", "dispatch_lag_ms", "cpu_percent", "rss_bytes"} <= metrics
    assert [v for _, _, m, v in monitor.samples if m == "dispatch_lag_ms"] == [7.0]  # max per tick
