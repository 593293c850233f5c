"""The simulated strategies keep the live strategies' semantics (loadgen/strategies.py): checked
against a sender whose every request takes a fixed service time."""

import pytest

from kvbench.loadgen.history import ConversationSource
from kvbench.loadgen.window import LevelWindow
from kvbench.results.records import Phase
from kvbench.simulate.events import EventLoop
from kvbench.simulate.strategies import build_strategy
from kvbench.workload.types import Conversation, Turn


class FixedTimeSender:
    def __init__(self, loop: EventLoop, service_s: float) -> None:
        self.loop, self.service_s = loop, service_s
        self.sent: list[
            tuple[str, int, float, float, str]
        ] = []  # conv, turn, scheduled, sent, phase
        self.in_flight = 0
        self.peak = 0

    def send(self, state, scheduled_s, phase, on_done):
        self.sent.append(
            (
                state.conversation_id,
                state.next_turn_index,
                scheduled_s,
                self.loop.now_s,
                phase.value,
            )
        )
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

        def finish():
            self.in_flight -= 1
            state.finish_turn(True, [1], "", 1)
            on_done(state, state.has_next_turn)

        self.loop.after(self.service_s, finish)


def conversations(count, turns, think_s=0.0):
    return [
        Conversation(f"c{i}", (1, 2), [Turn((3,), 1)] * turns, think_time_s=think_s)
        for i in range(count)
    ]


def run(strategy, level, convs, service_s, duration_s=None, max_requests=None, cap=None, **window):
    loop = EventLoop()
    sender = FixedTimeSender(loop, service_s)
    win = LevelWindow(
        start_perf=0.0,
        duration_s=duration_s,
        max_requests=max_requests,
        warmup_s=window.get("warmup_s", 0.0),
        cooldown_s=window.get("cooldown_s", 0.0),
    )
    source = ConversationSource(convs, cycle=win.cycles, seed=1)
    built = build_strategy(loop, sender, win, source, strategy, level, cap, seed=3)
    built.start()
    loop.run(lambda: built.done and sender.in_flight == 0)
    return sender, win, loop


def test_concurrent_runs_turns_in_order_with_think_time_between_them():
    sender, _, _ = run("concurrent", 2, conversations(3, 2, think_s=0.5), service_s=1.0)
    assert [(c, t, s) for c, t, s, _, _ in sender.sent] == [
        ("c0", 0, 0.0),
        ("c1", 0, 0.0),
        ("c0", 1, 1.5),  # answer at 1.0 + 0.5 s think time
        ("c1", 1, 1.5),
        ("c2", 0, 2.5),  # a worker takes the next conversation when its conversation ends
        ("c2", 1, 4.0),
    ]
    assert sender.peak == 2


def test_synchronous_is_one_stream():
    sender, _, _ = run("synchronous", 99, conversations(2, 1), service_s=0.25)
    assert [s for _, _, s, _, _ in sender.sent] == [0.0, 0.25]


def test_constant_rate_sends_one_turn_per_slot_and_stops_at_the_window():
    sender, window, _ = run("constant", 4.0, conversations(50, 1), service_s=0.1, duration_s=2.0)
    slots = [s for _, _, s, _, _ in sender.sent]
    assert slots == pytest.approx([i / 4.0 for i in range(8)])
    assert all(sent == scheduled for _, _, scheduled, sent, _ in sender.sent)
    assert window.measure_end_perf == 2.0


def test_rate_slot_prefers_a_ready_follow_up_and_goes_late_when_nothing_is_ready():
    # one conversation of 3 turns at 10 req/s with 0.35 s service: each slot waits for the answer
    sender, _, _ = run("constant", 10.0, conversations(1, 3), service_s=0.35)
    assert [(t, round(s, 3), round(sent, 3)) for _, t, s, sent, _ in sender.sent] == [
        (0, 0.0, 0.0),
        (1, 0.1, 0.35),  # scheduled at its slot, sent when the turn became ready: lag shows
        (2, 0.2, 0.7),
    ]


def test_max_concurrency_caps_turns_in_flight():
    sender, _, _ = run(
        "constant", 100.0, conversations(20, 1), service_s=1.0, cap=3, max_requests=9
    )
    assert sender.peak == 3
    assert len([p for *_, p in sender.sent if p == Phase.MEASURE.value]) == 9


def test_throughput_fills_the_cap_at_once_and_schedules_when_picked():
    sender, _, _ = run("throughput", 4, conversations(8, 1), service_s=1.0, max_requests=8)
    assert [s for _, _, s, _, _ in sender.sent] == [0.0] * 4 + [1.0] * 4


def test_poisson_slots_are_seeded():
    first, _, _ = run("poisson", 5.0, conversations(30, 1), service_s=0.01, duration_s=3.0)
    again, _, _ = run("poisson", 5.0, conversations(30, 1), service_s=0.01, duration_s=3.0)
    assert first.sent == again.sent and len(first.sent) > 5
    gaps = {round(b[2] - a[2], 6) for a, b in zip(first.sent, first.sent[1:])}
    assert len(gaps) > 3  # exponential gaps, not a constant rate


def test_warmup_and_cooldown_phases_follow_the_window():
    sender, _, _ = run(
        "constant",
        2.0,
        conversations(20, 1),
        service_s=0.1,
        duration_s=4.0,
        warmup_s=1.0,
        cooldown_s=1.0,
    )
    phases = [(s, p) for _, _, s, _, p in sender.sent]
    assert phases[:2] == [(0.0, "warmup"), (0.5, "warmup")]
    assert {p for s, p in phases if 1.0 <= s < 3.0} == {"measure"}
    assert {p for s, p in phases if s >= 3.0} == {"cooldown"}


def test_concurrent_streams_start_at_the_seeded_stagger_offsets():
    from kvbench.loadgen.schedule import stagger_offsets_s

    loop = EventLoop()
    sender = FixedTimeSender(loop, 10.0)  # every stream still busy with its first request
    win = LevelWindow(
        start_perf=0.0, duration_s=None, max_requests=None, warmup_s=0.0, cooldown_s=0.0
    )
    source = ConversationSource(conversations(3, 1), cycle=win.cycles, seed=1)
    built = build_strategy(loop, sender, win, source, "concurrent", 3, None, seed=3, stagger_s=2.0)
    built.start()
    loop.run(lambda: built.done and sender.in_flight == 0)
    assert [sent for _, _, _, sent, _ in sender.sent] == stagger_offsets_s(3, 2.0, seed=3)
    assert sender.sent[-1][3] > 0  # the streams did not all start at once
