"""Decode runs (engine/decode_run.py) change nothing: on randomized small workloads (shared
prefixes, chunked prefill, preemption, eviction, budgets that cut decodes short, aborts between
steps) the engine with runs on gives the same step durations, KV events, batch sizes, block-pool
state and counters, step by step, as with runs off; and every request's tokens, each with the
step that sampled it, are the same once the runs' tokens (heard through `on_run_end`) are put
back in the step that sampled them."""

import random

import pytest
from tests.emulator.engine.engine_testlib import make_engine, make_request

from kvbench.emulator.engine.decode_run import DecodeRuns
from kvbench.emulator.engine.request import Request
from kvbench.emulator.engine.scheduler import Scheduler


def workload(seed: int):
    rng = random.Random(seed)
    prefixes = [[rng.randrange(1000) for _ in range(rng.randrange(8, 60))] for _ in range(3)]
    requests = []
    for i in range(rng.randrange(4, 16)):
        prompt = rng.choice(prefixes) + [rng.randrange(1000) for _ in range(rng.randrange(1, 30))]
        arrival_s = rng.random() * 0.3
        requests.append(make_request(f"r{i}", prompt, rng.randrange(1, 90), arrival_s=arrival_s))
    overrides = {
        "num_gpu_blocks_override": rng.choice([11, 13, 24, 60]),
        "max_num_batched_tokens": rng.choice([8, 16, 33, 256]),
        "max_num_seqs": rng.choice([2, 4, 8]),
        "max_model_len": 160,
    }
    aborts = {rng.randrange(200): f"r{rng.randrange(16)}" for _ in range(rng.randrange(0, 4))}
    return overrides, sorted(requests, key=lambda r: r.arrival_s), aborts


def run(seed: int, runs_on: bool, end_runs_every: int = 0):
    """Step the engine as the simulated engine node does (arrivals before the step that starts
    after them, aborts between steps); returns per-step facts, tokens by request, end state.
    `end_runs_every` n > 0: every n-th step's runs all end before it is planned (as when some
    member would not get its token within the budget)."""
    overrides, requests, aborts = workload(seed)
    engine = make_engine(**overrides)
    if end_runs_every:
        members_fit = engine.scheduler._explicit_if_members_fit

        def sometimes_not(budget):
            if engine.runs.step_index % end_runs_every == 0:
                return None
            return members_fit(budget)

        engine.scheduler._explicit_if_members_fit = sometimes_not
    tokens: dict[str, list[tuple[int, int]]] = {}  # request id -> (step index, token id)
    step_index = -1

    def run_ended(req: Request, join: int, last: int) -> None:
        count = last - join + 1  # the run's tokens: the last ones materialized
        sampled = req.all_token_ids[len(req.all_token_ids) - count :] if count > 0 else []
        tokens.setdefault(req.request_id, []).extend(zip(range(join, last + 1), sampled))

    if runs_on:
        assert engine.enable_decode_runs(run_ended)
    steps = []
    pending = list(requests)
    now_s = 0.0
    while pending or engine.has_unfinished_requests():
        while pending and pending[0].arrival_s <= now_s:
            engine.add_request(pending.pop(0))
        if not engine.has_unfinished_requests():
            now_s = pending[0].arrival_s
            continue
        step_index += 1
        result = engine.step(now_s)
        if runs_on:
            assert engine.runs.step_index == step_index
        for output in result.outputs:
            for token in output.new_token_ids:
                tokens.setdefault(output.request_id, []).append((step_index, token))
        steps.append(
            (
                now_s,
                result.duration_s,
                sorted(o.request_id for o in result.outputs if o.finished),
                result.kv_events,
                result.num_scheduled_tokens,
                result.num_running,
                result.num_waiting,
            )
        )
        now_s += result.duration_s
        if step_index in aborts and aborts[step_index] in engine.requests:
            engine.abort_request(aborts[step_index])
        assert step_index < 20_000
    pool = engine.pool
    state = (
        pool.free_queue.block_ids(),
        sorted((h, sorted(holders)) for h, holders in pool.cached.items()),
        engine.stats(),
        engine.output_rate_tok_s,
    )
    return steps, {k: sorted(v) for k, v in tokens.items()}, state


@pytest.mark.parametrize("end_runs_every", [0, 3])
@pytest.mark.parametrize("seed", range(60))
def test_decode_runs_change_nothing(seed, end_runs_every):
    on_steps, on_tokens, on_state = run(seed, runs_on=True, end_runs_every=end_runs_every)
    off_steps, off_tokens, off_state = run(seed, runs_on=False)
    assert len(on_steps) == len(off_steps)
    for on, off in zip(on_steps, off_steps):
        assert on == off
    assert on_tokens == off_tokens
    assert on_state == off_state


def test_the_workloads_exercise_runs_and_their_early_ends(monkeypatch):
    """Runs end at their due step, by preemption (a member is the victim) and by aborts."""
    ends = {"due": 0, "preempted": 0, "aborted": 0}
    end, preempt, abort = DecodeRuns._end, Scheduler._preempt, DecodeRuns.leave_between_steps

    def counted_end(self, req, last, from_due):
        ends["due"] += from_due
        return end(self, req, last, from_due)

    def counted_preempt(self, req, plan):
        ends["preempted"] += req.run_join >= 0
        return preempt(self, req, plan)

    def counted_abort(self, req):
        ends["aborted"] += 1
        return abort(self, req)

    monkeypatch.setattr(DecodeRuns, "_end", counted_end)
    monkeypatch.setattr(Scheduler, "_preempt", counted_preempt)
    monkeypatch.setattr(DecodeRuns, "leave_between_steps", counted_abort)
    for seed in range(60):
        run(seed, runs_on=True)
    assert all(count > 0 for count in ends.values()), ends
