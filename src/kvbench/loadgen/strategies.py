"""Load strategies: when each turn of each conversation is sent.

- concurrent(N): N conversations in flight; a conversation's turns run one after another with its
  think time between them; when one ends the next conversation (list order) starts. synchronous is
  concurrent(1). With `stagger_s` > 0 stream i starts after a seeded offset drawn uniformly from
  [0, stagger_s) (stream 0 at 0): N identical streams started together would otherwise be sent,
  batched and finished together, in waves, for the whole level.
- constant(rate) / poisson(rate, seed): request slots at the rate; each slot takes the oldest
  follow-up turn that is ready (its previous turn finished + think time has passed), else starts
  the next conversation. So the request rate is the level, and conversations interleave. An
  optional max_concurrency caps in-flight requests (a slot waits for a free one).
- throughput(max_concurrency): every slot is due at once, capped by max_concurrency.
scheduled_s is the slot time for rate strategies, and the time the request became ready (turn
ready, or concurrency slot free for throughput) for the others; sent_s - scheduled_s is the
client's dispatch lag.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

from kvbench.loadgen.executor import TurnExecutor
from kvbench.loadgen.history import ConversationSource, ConversationState
from kvbench.loadgen.schedule import ReadyTurns, stagger_offsets_s
from kvbench.loadgen.window import LevelWindow


@dataclass
class LevelContext:
    executor: TurnExecutor
    window: LevelWindow
    source: ConversationSource


async def sleep_until(deadline_perf: float) -> None:
    delay = deadline_perf - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def wait_all_or_cancel(tasks: set[asyncio.Task] | list[asyncio.Task]) -> None:
    """Wait for `tasks`; if we are cancelled, cancel them, let them record themselves, re-raise."""
    if not tasks:
        return
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        await cancel_and_wait(tasks)
        raise
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


async def cancel_and_wait(tasks: set[asyncio.Task] | list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


async def run_concurrent(
    ctx: LevelContext, conversations_in_flight: int, stagger_s: float = 0.0, seed: int = 0
) -> None:
    start_perf = time.perf_counter()
    offsets = stagger_offsets_s(conversations_in_flight, stagger_s, seed)
    workers = [
        asyncio.ensure_future(_conversation_worker(ctx, start_perf + offset)) for offset in offsets
    ]
    await wait_all_or_cancel(workers)


async def _conversation_worker(ctx: LevelContext, first_send_perf: float) -> None:
    await sleep_until(first_send_perf)
    while True:
        scheduled = time.perf_counter()
        if ctx.window.phase_at(scheduled) is None:
            return
        state = ctx.source.next()
        if state is None:
            return
        while True:
            phase = ctx.window.phase_at(scheduled)
            if phase is None:
                return
            ctx.window.count(phase, scheduled)
            if not await ctx.executor.run_turn(state, scheduled, phase):
                break
            scheduled = time.perf_counter() + state.conversation.think_time_s
            await sleep_until(scheduled)


async def run_rate(
    ctx: LevelContext, slots: Iterator[float], max_concurrency: int | None, schedule_is_slot: bool
) -> None:
    """Send one turn per slot (see module doc). `schedule_is_slot` False: scheduled = when sent."""
    limiter = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    ready = ReadyTurns()
    tasks: set[asyncio.Task] = set()
    changed = asyncio.Event()  # set whenever a turn finishes
    try:
        for slot in slots:
            if schedule_is_slot and ctx.window.phase_at(slot) is None:
                break  # the level ends before this slot: do not sleep until it
            await sleep_until(slot)
            if limiter is not None:
                await limiter.acquire()
            picked = await _pick_turn(ctx, ready, changed, slot, schedule_is_slot)
            if picked is None:
                if limiter is not None:
                    limiter.release()
                break
            state, scheduled, phase = picked
            ctx.window.count(phase, scheduled)
            ready.running += 1
            task = asyncio.ensure_future(
                _rate_turn(ctx, state, scheduled, phase, ready, limiter, changed)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except asyncio.CancelledError:
        await cancel_and_wait(set(tasks))  # each in-flight turn records itself as cancelled
        raise
    await wait_all_or_cancel(set(tasks))


async def _pick_turn(
    ctx: LevelContext,
    ready: ReadyTurns,
    changed: asyncio.Event,
    slot: float,
    schedule_is_slot: bool,
):
    """(state, scheduled, phase) for this slot, or None when the level sends no more.

    When nothing can be sent yet (single-pass level: only unfinished follow-ups remain), waits
    for a turn to finish or become ready and sends late (the lag shows in sent - scheduled).
    """
    while True:
        now = time.perf_counter()
        scheduled = slot if schedule_is_slot else now
        phase = ctx.window.phase_at(scheduled)
        if phase is None:
            return None
        state = ready.pop_ready(now) or ctx.source.next()
        if state is not None:
            return state, scheduled, phase
        next_ready = ready.next_ready_s()
        if ready.running == 0 and next_ready is None:
            return None
        changed.clear()
        timeout = None if next_ready is None else max(0.0, next_ready - now)
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            pass


async def _rate_turn(
    ctx: LevelContext,
    state: ConversationState,
    scheduled: float,
    phase,
    ready: ReadyTurns,
    limiter: asyncio.Semaphore | None,
    changed: asyncio.Event,
) -> None:
    try:
        if await ctx.executor.run_turn(state, scheduled, phase):
            ready.push(time.perf_counter() + state.conversation.think_time_s, state)
    finally:
        ready.running -= 1
        if limiter is not None:
            limiter.release()
        changed.set()
