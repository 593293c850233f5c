"""Continuous batching, chunked prefill, recompute preemption and vLLM's hit counting."""

from __future__ import annotations

from engine_testlib import make_args, make_engine, make_request

from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.hashing import to_event_hash
from kvbench.emulator.engine.interface import BlockRemoved
from kvbench.emulator.engine.request import RequestStatus, generated_token_id, request_token_seed
from kvbench.emulator.engine.virtual import VirtualDriver


def test_chunked_prefill_under_token_budget_and_running_first():
    engine = make_engine(max_num_batched_tokens=32, max_model_len=160)
    engine.add_request(make_request("a", list(range(70)), max_tokens=3))
    scheduled = [engine.step(float(i)).num_scheduled_tokens for i in range(3)]
    assert scheduled == [32, 32, 6]  # the first token comes with the last chunk
    engine.add_request(make_request("b", list(range(100, 150)), max_tokens=1))
    result = engine.step(3.0)
    # a (running) decodes 1 token first, then b prefills within what is left of the budget.
    assert result.num_scheduled_tokens == 32
    assert engine.requests["b"].num_computed_tokens == 31
    assert [o.request_id for o in result.outputs] == ["a"]


def test_max_num_seqs_bounds_running_requests():
    engine = make_engine(max_num_seqs=2, max_num_batched_tokens=256)
    for i in range(3):
        engine.add_request(make_request(f"r{i}", [i] * 8, max_tokens=4))
    result = engine.step(0.0)
    assert (result.num_running, result.num_waiting) == (2, 1)
    assert result.num_scheduled_tokens == 16


def test_request_that_cannot_be_allocated_is_counted_again_each_step():
    engine = make_engine()  # 10 usable blocks of 16
    engine.add_request(make_request("big", [1] * 150, max_tokens=2))  # takes all 10 blocks
    engine.add_request(make_request("small", [2] * 20, max_tokens=1))
    engine.step(0.0)  # small: looked up (20), no room
    engine.step(0.1)  # big decodes; small looked up again (20), no room; big finishes
    assert engine.stats().prefix_cache_queries == 150 + 20 + 20
    result = engine.step(0.2)  # small: looked up a third time, runs
    assert [o.request_id for o in result.outputs] == ["small"]
    assert engine.stats().prefix_cache_queries == 150 + 20 * 3
    assert engine.stats().prefix_cache_hits == 0


def preemption_setup(**build_kwargs):
    engine = build_engine(make_args(max_num_batched_tokens=256), **build_kwargs)
    engine.add_request(make_request("r0", [1] * 80, max_tokens=4))  # exactly 5 blocks: 1..5
    engine.add_request(make_request("r1", [2] * 80, max_tokens=4))  # exactly 5 blocks: 6..10
    return engine


def test_last_running_request_is_preempted_and_recomputed():
    engine = preemption_setup()
    engine.step(0.0)  # both prefilled, all 10 blocks used, 81 tokens each
    r1_last_block_hash = engine.requests["r1"].block_hashes[4]
    second = engine.step(0.1)
    # r0 needs a 6th block: r1 (the last running) is preempted, its blocks freed in reverse
    # (10, 9, 8, 7, 6) and r0 takes block 10, evicting r1's last cached block.
    r1 = engine.requests["r1"]
    assert r1.status is RequestStatus.PREEMPTED and r1.num_computed_tokens == 0
    assert engine.scheduler.waiting[0] is r1
    assert [o.request_id for o in second.outputs] == ["r0"]
    assert engine.stats().num_preemptions == 1
    assert engine.kv.block_ids(engine.requests["r0"]) == [1, 2, 3, 4, 5, 10]
    removed = [h for e in second.kv_events if isinstance(e, BlockRemoved) for h in e.block_hashes]
    assert removed == [to_event_hash(r1_last_block_hash)]


def test_preempted_request_finishes_with_the_same_tokens_and_split_stats():
    engine = preemption_setup()
    run = VirtualDriver(engine).run(max_steps=50)
    tokens = {}
    for timed in run.outputs:
        tokens.setdefault(timed.output.request_id, []).extend(timed.output.new_token_ids)
    seed = request_token_seed(0, "r1")
    assert tokens["r1"] == [generated_token_id(seed, i, 4096) for i in range(4)]
    last_r1 = [t.output for t in run.outputs if t.output.request_id == "r1"][-1]
    assert last_r1.finished and last_r1.num_preemptions == 1
    stats = engine.stats()
    # vLLM >= 0.11.2: lookups of a preempted request are kept out of vllm:prefix_cache_*.
    # r1 (81 tokens after preemption) is looked up in steps 3, 4 (no room while r0 runs) and 5,
    # each time hitting its 4 first blocks (its 5th was evicted when r0 took block 10).
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (160, 0)
    assert (engine.kv.stats.preempted_queries, engine.kv.stats.preempted_hits) == (3 * 81, 3 * 64)
    assert stats.generation_tokens == 8 and stats.request_success == {"length": 2}
    # r1's prompt counts once, at its first token, with the hit it had when first scheduled.
    assert stats.prompt_tokens == 160
    assert stats.prompt_tokens_by_source["local_compute"] == 160


def test_preempted_lookups_in_the_same_counters_like_vllm_0_11_0():
    engine = preemption_setup(count_preempted_separately=False)
    VirtualDriver(engine).run(max_steps=50)
    stats = engine.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (160 + 3 * 81, 3 * 64)
    assert engine.kv.stats.preempted_queries == 0


def test_outputs_are_deterministic_and_within_vocab():
    runs = []
    for _ in range(2):
        engine = make_engine()
        engine.add_request(make_request("x", [3] * 10, max_tokens=5, sampling_seed=7))
        run = VirtualDriver(engine).run()
        runs.append([t for o in run.outputs for t in o.output.new_token_ids])
    assert runs[0] == runs[1] and len(runs[0]) == 5
    assert all(0 <= t < 4096 for t in runs[0])
    other = make_engine()
    other.add_request(make_request("x", [3] * 10, max_tokens=5, sampling_seed=8))
    assert [t for o in VirtualDriver(other).run().outputs for t in o.output.new_token_ids] != runs[
        0
    ]


def test_max_model_len_caps_generation():
    engine = make_engine(max_model_len=32, num_gpu_blocks_override=11)
    engine.add_request(make_request("a", [1] * 30, max_tokens=100))
    run = VirtualDriver(engine).run()
    assert len(run.outputs) == 2 and run.outputs[-1].output.finished


def test_virtual_driver_jumps_idle_gaps_and_stamps_step_ends():
    engine = make_engine()
    driver = VirtualDriver(engine)
    driver.submit(make_request("late", [1] * 8, max_tokens=2, arrival_s=5.0))
    run = driver.run()
    assert len(run.outputs) == 2
    assert run.outputs[0].time_s > 5.0
    assert run.outputs[1].time_s > run.outputs[0].time_s
    assert run.end_s == run.outputs[1].time_s


def test_abort_frees_running_blocks_and_drops_waiting_requests():
    engine = make_engine(max_num_seqs=1)
    engine.add_request(make_request("run", [1] * 40, max_tokens=10))
    engine.add_request(make_request("wait", [2] * 40, max_tokens=10))
    engine.step(0.0)
    assert engine.pool.num_free_blocks() == 7
    engine.abort_request("run")
    engine.abort_request("wait")
    assert engine.pool.num_free_blocks() == 10
    assert not engine.has_unfinished_requests()
    assert engine.step(0.1).num_scheduled_tokens == 0
    assert engine.stats().request_success == {}


def test_cached_tokens_by_source_count_at_admission_prompt_tokens_at_first_token():
    engine = make_engine(max_num_batched_tokens=32)
    engine.add_request(make_request("a", list(range(40)), max_tokens=1))
    engine.step(0.0)
    engine.step(0.1)  # a done: blocks 1, 2 cached
    engine.add_request(make_request("b", list(range(40)) + list(range(100, 140)), max_tokens=1))
    engine.step(1.0)  # b: 32 hit tokens, 32 of its 48 others computed; no token yet
    stats = engine.stats()
    assert stats.prompt_tokens_cached_by_source["device"] == 32
    assert stats.prompt_tokens == 40
    engine.step(1.1)
    stats = engine.stats()
    assert stats.prompt_tokens == 120
    assert stats.prompt_tokens_by_source == {
        "local_compute": 88,
        "local_cache_hit": 32,
        "external_kv_transfer": 0,
    }
    assert stats.prefix_cache_hits == stats.prompt_tokens_cached_by_source["device"]
