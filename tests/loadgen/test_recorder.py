import pytest

from kvbench.loadgen.outcome import RequestOutcome
from kvbench.loadgen.recorder import ReuseTracker, fill_from_outcome, itl_ms, parse_kv_hits
from kvbench.results.records import RequestRecord


def test_itl_splits_multi_token_chunks_into_equal_gaps():
    # first chunk 2 tokens at 1.0; 1 token at 1.1; 3 tokens at 1.4
    gaps = itl_ms([(1.0, 2), (1.1, 1), (1.4, 3)])
    assert gaps == pytest.approx([0.0, 100.0, 100.0, 100.0, 100.0])
    assert len(gaps) == 6 - 1


def test_record_arithmetic_ttft_e2e_tpot():
    outcome = RequestOutcome(
        sent_perf=10.5,
        end_perf=11.5,
        chunk_arrivals=[(10.7, 1), (11.0, 4)],
        usage={
            "prompt_tokens": 9,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 8},
        },
        done_seen=True,
    )
    record = RequestRecord(request_id="r", conversation_id="c", turn_index=0, cell_id="x")
    fill_from_outcome(record, outcome, run_t0_perf=10.0)
    assert record.sent_s == pytest.approx(0.5)
    assert record.first_token_s == pytest.approx(0.7)
    assert record.ttft_ms == pytest.approx(200.0)
    assert record.e2e_ms == pytest.approx(1000.0)
    assert record.tpot_ms == pytest.approx((1000.0 - 200.0) / 4)
    assert record.itl_ms == pytest.approx([75.0] * 4)
    assert (record.prompt_tokens, record.output_tokens, record.cached_tokens) == (9, 5, 8)


def test_absent_cached_tokens_stay_none_and_headers_fill_attribution():
    outcome = RequestOutcome(
        sent_perf=0.0,
        end_perf=0.1,
        chunk_arrivals=[(0.05, 1)],
        usage={"completion_tokens": 1},
        headers={
            "x-kvbench-kv-hits": "gpu=32, cpu=16,remote=0",
            "x-gateway-destination-endpoint": "10.0.0.7:8000",
            "x-kvbench-router-predicted-hit-tokens": "48",
        },
    )
    record = RequestRecord(request_id="r", conversation_id="c", turn_index=0, cell_id="x")
    fill_from_outcome(record, outcome, 0.0)
    assert record.cached_tokens is None
    assert record.tpot_ms is None  # one token: no TPOT
    assert (record.gpu_hit_tokens, record.cpu_hit_tokens, record.remote_hit_tokens) == (32, 16, 0)
    assert record.endpoint == "10.0.0.7:8000"
    assert record.router_predicted_hit_tokens == 48


def test_usage_kvbench_block_wins_over_header():
    outcome = RequestOutcome(
        sent_perf=0.0,
        end_perf=0.1,
        headers={"x-kvbench-kv-hits": "gpu=1,cpu=1,remote=1"},
        usage={"kvbench": {"gpu_hit_tokens": 5, "cpu_hit_tokens": 6, "remote_hit_tokens": 7}},
    )
    record = RequestRecord(request_id="r", conversation_id="c", turn_index=0, cell_id="x")
    fill_from_outcome(record, outcome, 0.0)
    assert (record.gpu_hit_tokens, record.cpu_hit_tokens, record.remote_hit_tokens) == (5, 6, 7)


def test_parse_kv_hits_skips_garbage():
    assert parse_kv_hits("gpu=3,bogus,cpu=x,remote=2") == {"gpu": 3, "remote": 2}
    assert parse_kv_hits(None) == {}


def test_reuse_tracker_counts_prompt_tokens_in_between():
    tracker = ReuseTracker()
    send = tracker.on_send
    a0 = send(
        prefix_group=0,
        conversation_id="A",
        turn_index=0,
        prefix_tokens=4,
        history_tokens=4,
        prompt_tokens=6,
        sent_s=1.0,
    )
    c0 = send(
        prefix_group=1,
        conversation_id="C",
        turn_index=0,
        prefix_tokens=4,
        history_tokens=4,
        prompt_tokens=10,
        sent_s=2.0,
    )
    a1 = send(
        prefix_group=0,
        conversation_id="A",
        turn_index=1,
        prefix_tokens=4,
        history_tokens=9,
        prompt_tokens=11,
        sent_s=3.5,
    )
    b0 = send(
        prefix_group=0,
        conversation_id="B",
        turn_index=0,
        prefix_tokens=4,
        history_tokens=4,
        prompt_tokens=6,
        sent_s=4.0,
    )
    assert (a0.reused_prefix_tokens, a0.reuse_distance_tokens, a0.reuse_distance_s) == (
        0,
        None,
        None,
    )
    assert (c0.reused_prefix_tokens, c0.reuse_distance_tokens) == (0, None)
    assert (a1.reused_prefix_tokens, a1.reuse_distance_tokens, a1.reuse_distance_s) == (9, 10, 2.5)
    assert (b0.reused_prefix_tokens, b0.reuse_distance_tokens, b0.reuse_distance_s) == (4, 0, 0.5)
