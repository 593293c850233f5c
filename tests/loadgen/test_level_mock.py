"""run_level against the in-process mock: token counting, history, strategies, windows, reuse."""

import itertools

import pytest
from tests.loadgen.conftest import conversation, run, single_pass

from kvbench.errors import UserError
from kvbench.loadgen.api import LevelPlan, sweep_rates
from kvbench.loadgen.history import synthesize_answer
from kvbench.loadgen.schedule import poisson_arrivals
from kvbench.results.records import Phase


async def test_multi_token_chunks_are_counted_as_tokens(start_mock):
    mock = await start_mock(tokens_per_chunk=4)
    result, [record] = await run(
        mock.endpoint(), [conversation("a", output_tokens=10)], single_pass()
    )
    assert record.status == "ok", record.error
    assert record.output_tokens == 10
    assert len(record.itl_ms) == 9
    assert record.itl_ms[:3] == [
        0.0,
        0.0,
        0.0,
    ]  # the first chunk's other 3 tokens came with the first
    assert record.prompt_tokens == 6 and record.cached_tokens == 0
    assert result.return_token_ids is True and record.history_synthesized is False
    assert result.counts == {"ok": 1, "error": 0, "timeout": 0, "cancelled": 0}


async def test_history_uses_returned_ids_turn_by_turn(start_mock):
    mock = await start_mock(block_size=4)
    conv = conversation("a", questions=3, question_len=2, output_tokens=3)
    _, records = await run(mock.endpoint(), [conv], single_pass())
    assert [r.turn_index for r in records] == [0, 1, 2]
    # turn k prompt = prefix 4 + k * (question 2 + answer 3) + question 2
    assert [r.prompt_tokens for r in records] == [6, 11, 16]
    # the mock's block cache (4-token blocks) sees turn k's prompt extend turn k-1's exactly
    assert [r.cached_tokens for r in records] == [0, 4, 8]
    assert [r.reused_prefix_tokens for r in records] == [0, 9, 14]
    assert all(not r.history_synthesized for r in records)


async def test_history_is_synthesized_when_server_returns_no_ids(start_mock):
    mock = await start_mock(return_token_ids=False)
    endpoint = mock.endpoint()
    result, records = await run(endpoint, [conversation("a", questions=2)], single_pass())
    assert result.probed is not None and result.probed.return_token_ids is False
    assert endpoint.return_token_ids is None  # the config given is not changed
    assert endpoint.with_capabilities(result.probed).return_token_ids is False  # next level
    assert [r.prompt_tokens for r in records] == [6, 11]
    assert all(r.history_synthesized for r in records)
    assert any("client-synthesized" in note for note in result.notes)


def test_synthesized_answers_are_deterministic_and_from_the_pool():
    first = synthesize_answer((5, 9, 13), 6, "0:a:0")
    assert first == synthesize_answer((5, 9, 13), 6, "0:a:0")
    assert set(first) <= {5, 9, 13} and len(first) == 6


async def test_chat_history_carries_answer_text(start_mock):
    mock = await start_mock()
    conv = conversation("a", questions=2, output_tokens=4)
    conv.prefix_text = "you are terse"
    conv.turns = [
        type(t)(t.question_token_ids, t.output_tokens, question_text="q one") for t in conv.turns
    ]
    _, records = await run(mock.endpoint(api="chat"), [conv], single_pass())
    # mock counts words: system 3 + user 2 = 5; then + assistant 4 words + user 2 = 11
    assert [r.prompt_tokens for r in records] == [5, 11]
    assert [r.output_tokens for r in records] == [4, 4]


async def test_concurrency_is_bounded(start_mock):
    mock = await start_mock(ttft_ms=20)
    convs = [conversation(f"c{i}") for i in range(12)]
    result, records = await run(mock.endpoint(), convs, single_pass("concurrent", 3))
    assert len(records) == 12 and result.counts["ok"] == 12
    assert mock.server.state.max_in_flight == 3
    assert result.peak_in_flight == 3


async def test_throughput_caps_in_flight_at_max_concurrency(start_mock):
    mock = await start_mock(ttft_ms=20)
    convs = [conversation(f"c{i}", questions=2) for i in range(6)]
    result, records = await run(mock.endpoint(), convs, single_pass("throughput", 4))
    assert len(records) == 12 and result.counts["ok"] == 12
    assert mock.server.state.max_in_flight == 4
    by_conv = {}
    for r in records:
        by_conv.setdefault(r.conversation_id, []).append(r)
    for turns in by_conv.values():  # a conversation's turns never overlap
        assert turns[1].sent_s >= turns[0].end_s


def test_poisson_arrivals_are_seeded():
    take = lambda seed: list(itertools.islice(poisson_arrivals(0.0, 10.0, seed), 50))  # noqa: E731
    assert take(3) == take(3)
    assert take(3) != take(4)
    gaps = [b - a for a, b in zip(take(3), take(3)[1:])]
    assert take(3)[0] == 0.0 and all(g > 0 for g in gaps)


async def test_poisson_level_schedules_are_reproducible(start_mock):
    mock = await start_mock()
    convs = [conversation(f"c{i}") for i in range(8)]
    offsets = []
    for _ in range(2):
        plan = LevelPlan(
            strategy="poisson", level=40.0, duration_s=None, max_requests=None, seed=11
        )
        result, records = await run(mock.endpoint(), convs, plan)
        start = result.measure_start_s
        offsets.append(sorted(round(r.scheduled_s - start, 9) for r in records))
    assert offsets[0] == offsets[1] and len(offsets[0]) == 8


async def test_warmup_measure_cooldown_by_slot_time(start_mock):
    mock = await start_mock()
    plan = LevelPlan(
        strategy="constant",
        level=20.0,
        duration_s=1.0,
        max_requests=None,
        warmup_s=0.275,
        cooldown_s=0.275,
    )
    result, records = await run(mock.endpoint(), [conversation("c")], plan)
    phases = [r.phase for r in sorted(records, key=lambda r: r.scheduled_s)]
    assert phases == ["warmup"] * 6 + ["measure"] * 9 + ["cooldown"] * 5
    assert result.measure_end_s - result.measure_start_s == pytest.approx(0.45)
    assert any("cycled" in note for note in result.notes)
    assert (
        len({r.conversation_id for r in records}) == 20
    )  # one-turn conversation reused under fresh ids


async def test_count_level_measures_exactly_max_requests_then_cools_down(start_mock):
    mock = await start_mock(ttft_ms=20)
    # cooldown far longer than one request, so a loaded machine still fits one in
    plan = LevelPlan(
        strategy="synchronous", level=1, duration_s=None, max_requests=3, cooldown_s=0.6
    )
    _, records = await run(mock.endpoint(), [conversation(f"c{i}") for i in range(3)], plan)
    phases = [r.phase for r in records]
    assert phases[:3] == ["measure"] * 3
    assert phases[3:] and set(phases[3:]) == {"cooldown"}


async def test_reuse_distance_tiny_case(start_mock):
    mock = await start_mock()
    convs = [
        conversation("A", questions=2, group=0),
        conversation("B", group=0),
        conversation("C", group=1, prefix=(7, 7, 7, 7)),
        conversation("D", group=0),
    ]
    _, records = await run(mock.endpoint(), convs, single_pass())
    got = [
        (
            r.conversation_id,
            r.turn_index,
            r.prompt_tokens,
            r.reused_prefix_tokens,
            r.reuse_distance_tokens,
        )
        for r in records
    ]
    assert got == [
        ("A", 0, 6, 0, None),
        ("A", 1, 11, 9, 0),
        ("B", 0, 6, 4, 0),
        ("C", 0, 6, 0, None),
        ("D", 0, 6, 4, 6),
    ]
    d = records[-1]
    assert d.reuse_distance_s == pytest.approx(d.sent_s - records[2].sent_s)


async def test_endpoint_and_hit_headers_reach_the_record(start_mock):
    mock = await start_mock(endpoint_name="pod-a", block_size=4)
    convs = [conversation("A"), conversation("B")]
    _, records = await run(mock.endpoint(), convs, single_pass())
    assert [r.endpoint for r in records] == ["pod-a", "pod-a"]
    assert [r.gpu_hit_tokens for r in records] == [0, 4]
    assert [r.cpu_hit_tokens for r in records] == [0, 0]


async def test_no_cached_tokens_is_said(start_mock):
    mock = await start_mock(cached_tokens=False)
    result, [record] = await run(mock.endpoint(), [conversation("A")], single_pass())
    assert record.cached_tokens is None
    assert any("reports no cached tokens" in note for note in result.notes)


async def test_min_tokens_dropped_when_refused(start_mock):
    mock = await start_mock(min_tokens=False)
    endpoint = mock.endpoint()
    result, [record] = await run(endpoint, [conversation("A")], single_pass())
    assert record.status == "ok" and result.probed is not None
    assert result.probed.min_tokens is False


def test_sweep_rates_follows_guidellm():
    assert sweep_rates(1.0, 9.0, 5) == pytest.approx([1.0, 9.0, 1 + 8 / 3, 1 + 16 / 3, 9.0])
    with pytest.raises(UserError, match="sweep_size"):
        sweep_rates(1.0, 2.0, 1)


async def test_bad_plan_is_a_user_error(start_mock):
    mock = await start_mock()
    with pytest.raises(UserError, match="strategy"):
        await run(
            mock.endpoint(),
            [],
            LevelPlan(strategy="bursty", level=1, duration_s=1, max_requests=None),
        )
    with pytest.raises(UserError, match="warmup_s"):
        await run(
            mock.endpoint(),
            [],
            LevelPlan(
                strategy="constant",
                level=1,
                duration_s=1,
                max_requests=None,
                warmup_s=0.6,
                cooldown_s=0.5,
            ),
        )


async def test_non_streaming_counts_all_tokens_at_once_and_reports_progress(start_mock):
    mock = await start_mock()
    updates = []
    from kvbench.loadgen.api import RunClock, run_level

    records = []
    await run_level(
        mock.endpoint(stream=False),
        [conversation("a", questions=2, output_tokens=5)],
        single_pass(),
        cell_id="ns",
        clock=RunClock(),
        on_record=records.append,
        on_progress=updates.append,
    )
    assert [r.output_tokens for r in records] == [5, 5]
    assert all(r.ttft_ms == r.e2e_ms and r.itl_ms == [0.0] * 4 for r in records)
    assert [r.prompt_tokens for r in records] == [
        6,
        13,
    ]  # 4 + 2 + 5 + 2: non-streamed answer ids feed the history too
    assert [(u.done, u.ok, u.errors) for u in updates] == [(1, 1, 0), (2, 2, 0)]


async def test_chat_without_question_text_is_refused_before_sending(start_mock):
    mock = await start_mock()
    with pytest.raises(UserError, match="question_text"):
        await run(mock.endpoint(api="chat"), [conversation("a")], single_pass())
    assert mock.server.state.requests == 0


async def test_a_prime_level_decides_its_records_phase_and_leaves_the_endpoint_as_given(start_mock):
    mock = await start_mock()
    endpoint = mock.endpoint()
    plan = LevelPlan("concurrent", 1, None, 2, record_phase=Phase.PRIME)
    result, records = await run(endpoint, [conversation("a"), conversation("b")], plan)
    assert [r.phase for r in records] == ["prime", "prime"]
    assert result.probed is not None and endpoint.return_token_ids is None
    again = endpoint.with_capabilities(result.probed)
    second, _ = await run(again, [conversation("c")], single_pass())
    assert second.probed is None  # the learned answer was given: no second probe
