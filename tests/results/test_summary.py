"""CellSummary: the one computation of a cell's numbers (window rule, phases, TPOT, cached share)."""

from __future__ import annotations

import pytest

from kvbench.results.records import Phase, RequestRecord, RequestStatus
from kvbench.results.summary import measure_window, summarize


def record(i: int, **over) -> RequestRecord:
    values = dict(
        sent_s=10.0 + i,
        end_s=11.0 + i,
        ttft_ms=100.0,
        e2e_ms=1000.0,
        output_tokens=10,
        prompt_tokens=200,
        tpot_ms=100.0,
    )
    values.update(over)
    return RequestRecord(f"r{i}", f"c{i}", 0, "cell", **values)


def test_rates_divide_by_the_recorded_window_even_when_requests_end_after_it():
    records = [record(i) for i in range(4)]  # last one ends at 14 s, after the window's 12 s
    summary = summarize(records, 10.0, 12.0)
    assert summary.measure_window_s == pytest.approx(2.0)
    assert summary.request_rate_rps == pytest.approx(2.0)
    # output tokens count where they arrived (no ITL recorded: spread from first token to end):
    # r0's 10 tokens at 10.1..11.0 s and r1's at 11.1..12.0 s are inside, r2's and r3's after it
    assert summary.output_tokens_per_s == pytest.approx(10.0)
    assert summary.prompt_tokens_per_s == pytest.approx(400.0)


def test_without_a_recorded_window_it_spans_first_send_to_last_end():
    records = [record(i) for i in range(3)]
    window = measure_window(None, None, records)
    assert window is not None and (window.start_s, window.end_s) == (10.0, 13.0)
    assert summarize(records, None, None).request_rate_rps == pytest.approx(1.0)
    assert summarize([], None, None).request_rate_rps is None


def test_only_measured_requests_count_and_failures_are_counted_apart():
    records = [
        record(0, phase=Phase.PRIME.value, ttft_ms=1.0),
        record(1, phase=Phase.WARMUP.value, ttft_ms=1.0),
        record(2, ttft_ms=10.0),
        record(3, ttft_ms=30.0),
        record(4, status=RequestStatus.ERROR.value, error="HTTP 500", ttft_ms=None),
    ]
    summary = summarize(records, 10.0, 20.0)
    assert summary.requests_ok == 2 and summary.requests_failed == 1
    assert summary.requests_by_status == {"ok": 2, "error": 1}
    assert summary.requests_other_phases == {"prime": 1, "warmup": 1}
    assert summary.first_error == "HTTP 500"
    assert summary.ttft_p50_ms == pytest.approx(20.0) and summary.ttft_mean_ms == pytest.approx(
        20.0
    )
    assert summary.latency_ms("ttft", "p99") == pytest.approx(29.8)


def test_tpot_falls_back_to_its_definition_and_skips_single_token_answers():
    records = [
        record(0, tpot_ms=None, ttft_ms=100.0, e2e_ms=1000.0, output_tokens=10),  # 900 / 9
        record(1, tpot_ms=None, output_tokens=1),  # no TPOT for one token
        record(2, tpot_ms=50.0),
    ]
    summary = summarize(records, 10.0, 20.0)
    assert summary.tpot_mean_ms == pytest.approx(75.0)


def test_cached_share_counts_only_requests_whose_server_reported_it():
    records = [
        record(0, cached_tokens=100, prompt_tokens=200),
        record(1, cached_tokens=None, prompt_tokens=10_000),
    ]
    assert summarize(records, 10.0, 20.0).cached_prompt_fraction == pytest.approx(0.5)
    assert summarize([record(0)], 10.0, 20.0).cached_prompt_fraction is None
