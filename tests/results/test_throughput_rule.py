"""The one throughput rule (results.summary.tokens_in_window): output tokens by arrival time inside
the measure window, so lock-step waves cannot quantize a cell's rate or its slices."""

import numpy as np
import pytest

from kvbench.results.records import RequestRecord
from kvbench.results.summary import MeasureWindow, summarize, token_arrivals_s, tokens_in_window


def _record(
    i: int,
    sent_s: float,
    ttft_ms: float = 100.0,
    tokens: int = 32,
    itl_ms: float = 25.0,
    phase: str = "measure",
    status: str = "ok",
) -> RequestRecord:
    first = sent_s + ttft_ms / 1000
    end = first + (tokens - 1) * itl_ms / 1000
    return RequestRecord(
        request_id=f"r{i}",
        conversation_id=f"c{i}",
        turn_index=0,
        cell_id="cell",
        sent_s=sent_s,
        first_token_s=first,
        end_s=end,
        ttft_ms=ttft_ms,
        e2e_ms=(end - sent_s) * 1000,
        itl_ms=[itl_ms] * (tokens - 1),
        output_tokens=tokens,
        prompt_tokens=64,
        phase=phase,
        status=status,
    )


def _waves(n_waves: int = 12, per_wave: int = 30, period_s: float = 1.0) -> list[RequestRecord]:
    """Lock-step load: every wave's 30 requests sent within 30 ms, all ending together."""
    return [
        _record(w * per_wave + k, w * period_s + k * 0.001)
        for w in range(n_waves)
        for k in range(per_wave)
    ]


def test_token_arrivals_follow_first_token_and_gaps():
    record = _record(0, 10.0, ttft_ms=200.0, tokens=4, itl_ms=50.0)
    assert token_arrivals_s(record) == pytest.approx([10.2, 10.25, 10.3, 10.35])
    no_itl = RequestRecord(
        request_id="x",
        conversation_id="c",
        turn_index=0,
        cell_id="c",
        sent_s=0.0,
        first_token_s=1.0,
        end_s=2.0,
        output_tokens=3,
    )
    assert token_arrivals_s(no_itl) == pytest.approx([1.0, 1.5, 2.0])


def test_only_tokens_inside_the_window_count_whatever_their_request():
    records = [
        _record(0, 0.0, tokens=40),
        _record(1, 5.0, status="error"),
        _record(2, 0.0, phase="warmup"),
    ]
    window = MeasureWindow(0.5, 1.0)  # tokens arrive at 0.1 + 0.025 k
    # request 0 puts its tokens 16..36 inside [0.5, 1.0] (21), the 32-token warm-up request its
    # tokens 16..31 (16); the failed request none
    assert tokens_in_window(records, window).tolist() == [37.0]


def test_lock_step_waves_do_not_quantize_the_rate():
    records = _waves()
    rates = [
        summarize(records, start, start + 6.5).output_tokens_per_s
        for start in np.arange(2.0, 3.0, 0.1)
    ]
    # 30 requests x 32 tokens per 1 s wave: 960 tok/s on average, within the decode's own ripple
    assert all(abs(r - 960.0) < 60 for r in rates), rates
    # counting whole requests at their end jumps by a full wave (960 tokens over 6.5 s) between windows
    by_completion = [
        sum(r.output_tokens for r in records if start <= r.end_s <= start + 6.5) / 6.5
        for start in np.arange(2.0, 3.0, 0.1)
    ]
    assert max(by_completion) - min(by_completion) >= 140
    assert max(rates) - min(rates) < 100


def test_slices_of_a_wave_locked_cell_all_see_tokens():
    counts = tokens_in_window(_waves(), MeasureWindow(2.0, 8.0), n_slices=10)
    assert (counts > 0).all() and counts.sum() > 0
