"""Real-time driver: absolute deadlines, lag measurement, idling, coalescing (virtual clock)."""

from __future__ import annotations

import asyncio

from emu_api_fake_engine import FakeEngine

from kvbench.emulator.api.driver import EngineDriver
from kvbench.emulator.engine.interface import EngineRequest


class FakeClock:
    """Monotonic clock whose sleeps always overshoot by `late_s` (a slow event loop)."""

    def __init__(self, start_s: float = 100.0, late_s: float = 0.0) -> None:
        self.now_s = start_s
        self.late_s = late_s
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        self.now_s += delay_s + self.late_s


class LagRecorder:
    def __init__(self) -> None:
        self.lags: list[float] = []
        self.starts: list[float] = []
        self.ends: list[float] = []

    def observe_step(self, result, start_s, end_s, lag_s):
        self.starts.append(start_s)
        self.ends.append(end_s)
        self.lags.append(lag_s)

    def observe_itl(self, gaps_s):
        pass

    def observe_finished(self, stream, end_s):
        pass


def _request(rid: str, max_tokens: int, clock: FakeClock) -> EngineRequest:
    return EngineRequest(rid, list(range(10)), max_tokens, arrival_s=clock())


async def test_deadlines_are_absolute_and_lag_stays_bounded():
    clock = FakeClock(late_s=0.0004)
    engine = FakeEngine(step_duration_s=0.005)
    recorder = LagRecorder()
    driver = EngineDriver(engine, clock, sleep=clock.sleep, observer=recorder)
    driver.submit(_request("a", 50, clock))
    for _ in range(50):
        await driver.step_once()
    # deadline_n = start + n * duration, whatever the wake-up lateness (no drift)
    assert [round(s - 100.0, 9) for s in recorder.starts] == [
        round(i * 0.005, 9) for i in range(50)
    ]
    assert engine.step_times == recorder.starts  # the engine gets the deadline as now_s
    # each step starts late by exactly one oversleep, never more: lag does not accumulate
    assert recorder.lags[0] == 0.0
    assert max(recorder.lags[1:]) < 0.0004 + 1e-9 and min(recorder.lags[1:]) > 0.0004 - 1e-9
    # the sleeps shrink to compensate: each asks for duration - lateness
    assert abs(clock.sleeps[5] - (0.005 - 0.0004)) < 1e-9


async def test_overloaded_driver_shows_growing_lag():
    clock = FakeClock(late_s=0.006)  # every wake-up is later than a whole step
    engine = FakeEngine(step_duration_s=0.005)
    recorder = LagRecorder()
    driver = EngineDriver(engine, clock, sleep=clock.sleep, observer=recorder)
    driver.submit(_request("a", 10, clock))
    for _ in range(10):
        await driver.step_once()
    # a wake-up costs 6 ms of real time per 5 ms step: after the first oversleep the driver never
    # sleeps again and falls 1 ms further behind every step; the lag shows it all
    expected = [0.0] + [0.006 + k * 0.001 for k in range(9)]
    assert all(abs(a - b) < 1e-9 for a, b in zip(recorder.lags, expected))


async def test_idle_driver_runs_no_steps_and_restarts_deadlines_on_submit():
    clock = FakeClock()
    engine = FakeEngine(step_duration_s=0.005)
    recorder = LagRecorder()
    driver = EngineDriver(engine, clock, sleep=clock.sleep, observer=recorder)
    task = asyncio.create_task(driver.run())
    await asyncio.sleep(0)
    assert engine.step_times == [] and driver.deadline_s is None
    clock.now_s = 200.0
    stream = driver.submit(_request("a", 3, clock))
    while (await stream.next_tokens()) is not None:
        pass
    await asyncio.sleep(0)
    assert [round(t, 9) for t in engine.step_times] == [200.0, 200.005, 200.01]
    assert driver.deadline_s is None  # idle again
    driver.stop()
    await task


async def test_stream_interval_coalesces_but_releases_first_and_last_at_once():
    clock = FakeClock()
    engine = FakeEngine(step_duration_s=0.005)
    driver = EngineDriver(engine, clock, sleep=clock.sleep, stream_interval=4)
    stream = driver.submit(_request("a", 7, clock))
    batches = []
    consumer = asyncio.create_task(_collect(stream, batches))
    for _ in range(7):
        await driver.step_once()
        await asyncio.sleep(0)
    await consumer
    assert [len(b) for b in batches] == [1, 4, 2]
    assert [t for b in batches for t in b] == [1001, 1002, 1003, 1004, 1005, 1006, 1007]
    assert abs(stream.first_token_s - 100.005) < 1e-9 and abs(stream.last_token_s - 100.035) < 1e-9


async def _collect(stream, batches):
    while (batch := await stream.next_tokens()) is not None:
        batches.append(batch)


async def test_abort_frees_the_request_in_the_engine():
    clock = FakeClock()
    engine = FakeEngine()
    driver = EngineDriver(engine, clock, sleep=clock.sleep)
    stream = driver.submit(_request("a", 100, clock))
    await driver.step_once()
    driver.abort("a")
    assert engine.aborted == ["a"] and not engine.has_unfinished_requests()
    assert stream.finished and stream.finish_reason.value == "abort" and driver.num_streams == 0
