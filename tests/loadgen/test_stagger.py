"""The concurrent strategy's staggered start: seeded offsets, and streams that really start apart."""

from tests.loadgen.conftest import conversation, run, single_pass

from kvbench.loadgen.schedule import stagger_offsets_s
from kvbench.spec.experiment import LoadSpec


def test_offsets_are_seeded_sorted_and_inside_the_window():
    offsets = stagger_offsets_s(8, 2.0, seed=7)
    assert offsets == stagger_offsets_s(8, 2.0, seed=7)
    assert offsets != stagger_offsets_s(8, 2.0, seed=8)
    assert offsets[0] == 0.0 and offsets == sorted(offsets)
    assert all(0.0 <= o < 2.0 for o in offsets) and len(set(offsets)) == 8


def test_no_stagger_means_all_streams_at_once():
    assert stagger_offsets_s(4, 0.0, seed=1) == [0.0] * 4
    assert stagger_offsets_s(1, 5.0, seed=1) == [0.0]


def test_stagger_is_on_by_default_and_follows_the_warmup():
    assert LoadSpec(duration_s=10).effective_stagger_s() == 1.0
    assert LoadSpec(duration_s=10, warmup_s=3).effective_stagger_s() == 3.0
    assert LoadSpec(duration_s=10, warmup_s=3, stagger_s=0).effective_stagger_s() == 0.0


async def test_staggered_streams_send_their_first_requests_apart(start_mock):
    mock = await start_mock(ttft_ms=400)  # every stream is still busy with its first request
    convs = [conversation(f"c{i}") for i in range(4)]
    _, together = await run(mock.endpoint(), convs, single_pass("concurrent", 4))
    _, apart = await run(
        mock.endpoint(), convs, single_pass("concurrent", 4, stagger_s=0.3, seed=3)
    )
    first_sends = sorted(r.sent_s for r in together)
    assert first_sends[-1] - first_sends[0] < 0.1
    sends = sorted(r.sent_s for r in apart)
    expected = stagger_offsets_s(4, 0.3, seed=3)
    gaps = [b - a for a, b in zip(sends, sends[1:])]
    expected_gaps = [b - a for a, b in zip(expected, expected[1:])]
    assert all(abs(g - e) < 0.03 for g, e in zip(gaps, expected_gaps))
    assert sends[-1] - sends[0] > 0.1
