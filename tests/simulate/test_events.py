from kvbench.simulate.events import EventLoop, RunEnd


def test_actions_run_in_time_order_and_ties_in_scheduling_order():
    loop = EventLoop()
    seen: list[tuple[float, str]] = []
    for time_s, name in ((2.0, "c"), (1.0, "a"), (1.0, "b"), (0.5, "first")):
        loop.at(time_s, lambda n=name: seen.append((loop.now_s, n)))
    assert loop.run(lambda: False) is RunEnd.IDLE
    assert seen == [(0.5, "first"), (1.0, "a"), (1.0, "b"), (2.0, "c")]


def test_an_action_scheduled_in_the_past_runs_now():
    loop = EventLoop(start_s=5.0)
    seen = []
    loop.at(1.0, lambda: seen.append(loop.now_s))
    loop.run(lambda: False)
    assert seen == [5.0]


def test_every_ticks_on_absolute_times_while_active():
    loop = EventLoop()
    ticks: list[float] = []
    loop.every(0.25, lambda: ticks.append(loop.now_s), lambda: loop.now_s < 1.0)
    loop.after(0.1, lambda: loop.after(0.3, lambda: None))  # unrelated work in between
    assert loop.run(lambda: False) is RunEnd.IDLE
    assert ticks == [0.0, 0.25, 0.5, 0.75]


def test_run_stops_at_the_limit_and_when_the_condition_holds():
    loop = EventLoop()
    done = []
    loop.every(1.0, lambda: done.append(loop.now_s), lambda: True)
    assert loop.run(lambda: False, limit_s=3.5) is RunEnd.LIMIT
    assert done == [0.0, 1.0, 2.0, 3.0] and loop.now_s == 3.0
    assert loop.run(lambda: len(done) >= 6) is RunEnd.DONE
    assert done[-1] == 5.0
