"""The load strategies as event-driven state machines on the virtual clock, with the live
strategies' semantics (loadgen/strategies.py), sharing their pure parts (loadgen/schedule.py,
loadgen/window.py, loadgen/history.py):

- concurrent(N) / synchronous: N conversation workers; a worker runs its conversation's turns one
  after another with the think time between them, then takes the next conversation (list order);
  scheduled = when the turn became ready. Workers start at the plan's seeded stagger offsets.
- constant / poisson: one turn per arrival slot (the oldest ready follow-up, else the next
  conversation); `max_concurrency` caps turns in flight (a slot waits for a free one); a slot with
  nothing to send waits for a turn to finish or become ready and goes late (scheduled stays the
  slot: the lag shows in sent - scheduled).
- throughput: every slot due at once, capped by max_concurrency; scheduled = when it was picked.
Every strategy stops sending when the window says the level is over (or the conversations run dry
on a single-pass level); `done` turns true once nothing is in flight either.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from kvbench.loadgen.history import ConversationSource, ConversationState
from kvbench.loadgen.schedule import (
    ReadyTurns,
    constant_arrivals,
    poisson_arrivals,
    stagger_offsets_s,
)
from kvbench.loadgen.window import LevelWindow
from kvbench.simulate.client import LevelSender
from kvbench.simulate.events import EventLoop


class ConcurrentStrategy:
    def __init__(
        self,
        loop: EventLoop,
        sender: LevelSender,
        window: LevelWindow,
        source: ConversationSource,
        streams: int,
        offsets_s: list[float] | None = None,
    ) -> None:
        self.loop, self.sender, self.window, self.source = loop, sender, window, source
        self.streams = streams
        self.workers_left = streams
        # stream i starts offsets_s[i] after start() (loadgen/schedule.py stagger_offsets_s)
        self.offsets_s = offsets_s or [0.0] * streams

    def start(self) -> None:
        start_s = self.loop.now_s
        for offset_s in self.offsets_s:
            if offset_s <= 0:
                self._next_conversation()
            else:
                self.loop.at(start_s + offset_s, self._next_conversation)

    @property
    def done(self) -> bool:
        return self.workers_left == 0

    def _next_conversation(self) -> None:
        scheduled_s = self.loop.now_s
        if self.window.phase_at(scheduled_s) is None:
            self.workers_left -= 1
            return
        state = self.source.next()
        if state is None:
            self.workers_left -= 1
            return
        self._send(state, scheduled_s)

    def _send(self, state: ConversationState, scheduled_s: float) -> None:
        phase = self.window.phase_at(scheduled_s)
        if phase is None:
            self.workers_left -= 1
            return
        self.window.count(phase, scheduled_s)
        self.sender.send(state, scheduled_s, phase, self._turn_done)

    def _turn_done(self, state: ConversationState, more: bool) -> None:
        if not more:
            self._next_conversation()
            return
        ready_s = self.loop.now_s + state.conversation.think_time_s
        self.loop.at(ready_s, lambda: self._send(state, ready_s))


class RateStrategy:
    """constant, poisson and throughput: see the module doc."""

    def __init__(
        self,
        loop: EventLoop,
        sender: LevelSender,
        window: LevelWindow,
        source: ConversationSource,
        slots: Iterator[float],
        max_concurrency: int | None,
        schedule_is_slot: bool,
    ) -> None:
        self.loop, self.sender, self.window, self.source = loop, sender, window, source
        self.slots = slots
        self.max_concurrency = max_concurrency
        self.schedule_is_slot = schedule_is_slot
        self.ready = ReadyTurns()
        self.in_use = 0  # limiter slots taken
        self.slot_s = 0.0
        self.waiting_for: str | None = None  # "limiter" | "turn" while a slot waits
        self._wait_token = itertools.count()
        self._current_wait = -1
        self.stopped = False

    def start(self) -> None:
        self._next_slot()

    @property
    def done(self) -> bool:
        return self.stopped and self.ready.running == 0

    def _stop(self) -> None:
        self.stopped = True
        self.waiting_for = None

    def _next_slot(self) -> None:
        slot_s = next(self.slots)
        if self.schedule_is_slot and self.window.phase_at(slot_s) is None:
            self._stop()  # the level ends before this slot
            return
        self.slot_s = slot_s
        self.loop.at(slot_s, self._on_slot)

    def _on_slot(self) -> None:
        if self.max_concurrency is not None and self.in_use >= self.max_concurrency:
            self.waiting_for = "limiter"
            return
        if self.max_concurrency is not None:
            self.in_use += 1
        self._try_pick()

    def _try_pick(self) -> None:
        now_s = self.loop.now_s
        scheduled_s = self.slot_s if self.schedule_is_slot else now_s
        phase = self.window.phase_at(scheduled_s)
        if phase is None:
            self._release_limiter()
            self._stop()
            return
        state = self.ready.pop_ready(now_s) or self.source.next()
        if state is not None:
            self.waiting_for = None
            self.window.count(phase, scheduled_s)
            self.ready.running += 1
            self.sender.send(state, scheduled_s, phase, self._turn_done)
            self._next_slot()
            return
        next_ready_s = self.ready.next_ready_s()
        if self.ready.running == 0 and next_ready_s is None:
            self._release_limiter()
            self._stop()
            return
        self.waiting_for = "turn"
        token = self._current_wait = next(self._wait_token)
        if next_ready_s is not None:
            self.loop.at(next_ready_s, lambda: self._wake(token))

    def _wake(self, token: int) -> None:
        if self.waiting_for == "turn" and token == self._current_wait:
            self._try_pick()

    def _release_limiter(self) -> None:
        if self.max_concurrency is not None:
            self.in_use -= 1

    def _turn_done(self, state: ConversationState, more: bool) -> None:
        if more:
            self.ready.push(self.loop.now_s + state.conversation.think_time_s, state)
        self.ready.running -= 1
        self._release_limiter()
        if self.waiting_for == "limiter":
            self.in_use += 1
            self._try_pick()
        elif self.waiting_for == "turn":
            self._try_pick()


Strategy = ConcurrentStrategy | RateStrategy


def build_strategy(
    loop: EventLoop,
    sender: LevelSender,
    window: LevelWindow,
    source: ConversationSource,
    strategy: str,
    level: float,
    max_concurrency: int | None,
    seed: int,
    stagger_s: float = 0.0,
) -> Strategy:
    start_s = loop.now_s
    if strategy == "synchronous":
        return ConcurrentStrategy(loop, sender, window, source, 1)
    if strategy == "concurrent":
        streams = int(level)
        offsets = stagger_offsets_s(streams, stagger_s, seed)
        return ConcurrentStrategy(loop, sender, window, source, streams, offsets)
    if strategy == "throughput":
        slots = itertools.repeat(start_s)
        cap = int(max_concurrency or level)
        return RateStrategy(loop, sender, window, source, slots, cap, schedule_is_slot=False)
    if strategy == "constant":
        arrivals = constant_arrivals(start_s, level)
        return RateStrategy(loop, sender, window, source, arrivals, max_concurrency, True)
    if strategy == "poisson":
        arrivals = poisson_arrivals(start_s, level, seed)
        return RateStrategy(loop, sender, window, source, arrivals, max_concurrency, True)
    raise ValueError(f"strategy {strategy!r} cannot be simulated")
