"""The engine's decode fast paths (KVCacheManager.extend_in_place + Scheduler._add_decode, and
hashing only when a block fills) change nothing: on randomized small workloads with shared
prefixes, chunked prefill, preemption and eviction, the engine with them off (every request
through allocate_slots / _add_scheduled, the hasher called every token) produces the same outputs,
step durations, KV events, block-pool state and counters, step by step (invariants checked)."""

import random
from dataclasses import astuple

import pytest
from tests.emulator.engine.engine_testlib import make_engine, make_request

from kvbench.emulator.engine.hashing import BlockHasher
from kvbench.emulator.engine.request import _splitmix64, generated_token_id
from kvbench.emulator.engine.virtual import VirtualDriver


class EveryTokenHasher:
    """Delegates to the engine's hasher but reports block size 1, so the engine's "a block is
    full" guard always holds and extend runs after every token (extend itself decides)."""

    def __init__(self, hasher: BlockHasher) -> None:
        self.hasher = hasher
        self.block_size = 1 if hasher.block_size else 0

    def extend(self, token_ids, block_hashes, cache_salt) -> None:
        self.hasher.extend(token_ids, block_hashes, cache_salt)


def workload(seed: int):
    rng = random.Random(seed)
    prefixes = [[rng.randrange(1000) for _ in range(rng.randrange(8, 60))] for _ in range(3)]
    requests = []
    for i in range(rng.randrange(4, 14)):
        prompt = rng.choice(prefixes) + [rng.randrange(1000) for _ in range(rng.randrange(1, 30))]
        requests.append(
            make_request(f"r{i}", prompt, rng.randrange(1, 40), arrival_s=rng.random() * 0.05)
        )
    overrides = {
        "num_gpu_blocks_override": rng.choice([11, 13, 24]),
        "max_num_batched_tokens": rng.choice([16, 33, 256]),
        "max_num_seqs": rng.choice([2, 4, 8]),
        "max_model_len": 160,
    }
    return overrides, requests


def run(seed: int, fast: bool):
    overrides, requests = workload(seed)
    engine = make_engine(**overrides)
    if not fast:
        engine.kv.extend_in_place = lambda req: False  # type: ignore[method-assign]
        engine.hasher = EveryTokenHasher(engine.hasher)  # type: ignore[assignment]
    steps = []
    plans = []
    schedule = engine.scheduler.schedule

    def recorded_schedule(now_s, admit_by_s=None):
        plan = schedule(now_s, admit_by_s)
        scheduled = [(req.request_id, num_new) for req, num_new in plan.scheduled]
        plans.append((scheduled, [r.request_id for r in plan.preempted], astuple(plan.work)))
        return plan

    engine.scheduler.schedule = recorded_schedule  # type: ignore[method-assign]

    def on_step(start_s, result) -> None:
        outs = result.outputs
        steps.append(
            (
                start_s,
                result.duration_s,
                [(o.request_id, o.new_token_ids, o.finished, o.num_cached_tokens) for o in outs],
                result.kv_events,
                result.num_scheduled_tokens,
                result.num_running,
                result.num_waiting,
            )
        )

    driver = VirtualDriver(engine, on_step=on_step)
    driver.submit_all(requests)
    driver.run(max_steps=5000)
    pool = engine.pool
    state = (
        pool.free_queue.block_ids(),
        sorted((h, sorted(holders)) for h, holders in pool.cached.items()),
        engine.stats(),
    )
    return steps, plans, state


@pytest.mark.parametrize("seed", range(40))
def test_decode_fast_paths_change_nothing(seed):
    fast_steps, fast_plans, fast_state = run(seed, fast=True)
    slow_steps, slow_plans, slow_state = run(seed, fast=False)
    assert len(fast_steps) == len(slow_steps)
    for fast, slow in zip(fast_steps, slow_steps):
        assert fast == slow
    assert fast_plans == slow_plans  # the same batches and the same work terms
    assert fast_state == slow_state


def test_the_workloads_exercise_preemption_and_eviction():
    preempted = evicted = 0
    for seed in range(40):
        steps, _, state = run(seed, fast=True)
        preempted += state[2].num_preemptions
        evicted += sum(type(e).__name__ == "BlockRemoved" for s in steps for e in s[3])
    assert preempted > 0 and evicted > 0


def test_generated_token_id_is_the_splitmix_of_seed_plus_index():
    rng = random.Random(9)
    for _ in range(2000):
        seed = rng.choice([rng.getrandbits(64), (1 << 64) - 1 - rng.randrange(5), 0])
        index, vocab = rng.randrange(100_000), rng.choice([7, 4096, 151_936])
        assert generated_token_id(seed, index, vocab) == _splitmix64(seed + index) % vocab
