"""Connector hook points and external-hit accounting, with a tiny in-test fake connector."""

from __future__ import annotations

import sys
import types

import pytest
from engine_testlib import make_args, make_engine, make_request

from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.connector import ConnectorPoll, StepTransfer
from kvbench.emulator.engine.interface import BlockStored, TierHits
from kvbench.emulator.engine.request import RequestStatus
from kvbench.errors import UserError

CPU_EVENT = BlockStored(
    block_hashes=[b"x"], parent_block_hash=None, token_ids=[], block_size=16, medium="CPU"
)


class FakeConnector:
    """Claims `external_tokens` beyond the local hit for every first lookup of a request."""

    def __init__(self, external_tokens=0, load_async=False, blocking_s=0.0, hold_on_finish=False):
        self.external_tokens = external_tokens
        self.load_async = load_async
        self.blocking_s = blocking_s
        self.hold_on_finish = hold_on_finish
        self.calls: list[tuple] = []
        self.loads_done: list[str] = []
        self.stores_done: list[str] = []

    def get_num_new_matched_tokens(self, request, num_local_hit_tokens, now_s):
        self.calls.append(("match", request.request_id, num_local_hit_tokens))
        return self.external_tokens, self.load_async

    def update_state_after_alloc(self, request, block_ids, num_external_tokens, now_s):
        self.calls.append(("alloc", request.request_id, list(block_ids), num_external_tokens))

    def build_step(self, scheduled, now_s):
        self.calls.append(
            (
                "step",
                [
                    (c.request.request_id, c.num_computed_tokens, c.num_scheduled_tokens)
                    for c in scheduled
                ],
            )
        )
        return StepTransfer(blocking_s=self.blocking_s)

    def request_finished(self, request, block_ids, now_s):
        self.calls.append(("finished", request.request_id, list(block_ids)))
        return self.hold_on_finish

    def poll(self, now_s):
        poll = ConnectorPoll(finished_loading=self.loads_done, finished_storing=self.stores_done)
        self.loads_done, self.stores_done = [], []
        return poll

    def external_hits(self, request_id):
        return TierHits(cpu_tokens=self.external_tokens)

    def take_events(self):
        return [CPU_EVENT]

    def reset(self):
        self.calls.append(("reset",))

    def metrics(self):
        return {"vllm:fake_total": 1.0}


def engine_with(connector, **overrides):
    engine = make_engine(**overrides)
    engine.connector = connector
    engine.scheduler.connector = connector
    return engine


def test_sync_external_hit_is_scheduled_counted_and_costed():
    fake = FakeConnector(external_tokens=32, blocking_s=0.25)
    engine = engine_with(fake)
    engine.add_request(make_request("a", list(range(50)), max_tokens=1))
    result = engine.step(0.0)
    assert fake.calls[0] == ("match", "a", 0)
    assert fake.calls[1] == ("alloc", "a", [1, 2, 3, 4], 32)
    assert fake.calls[2] == ("step", [("a", 32, 18)])  # only the tokens beyond the external hit run
    assert result.num_scheduled_tokens == 18
    assert result.duration_s > 0.25  # the synchronous load blocks the step
    out = result.outputs[0]
    assert out.num_cached_tokens == 32 and out.hits == TierHits(gpu_tokens=0, cpu_tokens=32)
    assert result.kv_events[-1] is CPU_EVENT  # connector events follow the GPU ones
    assert isinstance(result.kv_events[0], BlockStored) and result.kv_events[0].medium == "GPU"
    stats = engine.stats()
    assert (stats.external_prefix_cache_queries, stats.external_prefix_cache_hits) == (50, 32)
    assert stats.prompt_tokens_by_source == {
        "local_compute": 18,
        "local_cache_hit": 0,
        "external_kv_transfer": 32,
    }
    assert stats.prompt_tokens_cached_by_source["host"] == 32
    assert stats.connector_metrics == {"vllm:fake_total": 1.0}


def test_local_hit_is_passed_to_the_connector():
    fake = FakeConnector()
    engine = engine_with(fake)
    engine.add_request(make_request("a", list(range(40))))
    engine.step(0.0)
    engine.add_request(make_request("b", list(range(40))))
    engine.step(1.0)
    assert ("match", "b", 32) in fake.calls


def test_async_load_parks_request_until_poll_reports_it():
    fake = FakeConnector(external_tokens=32, load_async=True)
    engine = engine_with(fake)
    engine.add_request(make_request("a", list(range(50)), max_tokens=1))
    first = engine.step(0.0)
    assert first.num_scheduled_tokens == 0 and first.outputs == []
    assert engine.requests["a"].status is RequestStatus.WAITING_FOR_REMOTE_KVS
    assert engine.kv.block_ids(engine.requests["a"]) == [1, 2]  # room for the loaded tokens only
    engine.step(0.1)
    assert engine.requests["a"].status is RequestStatus.WAITING_FOR_REMOTE_KVS
    fake.loads_done = ["a"]
    third = engine.step(0.2)
    assert third.num_scheduled_tokens == 50 - 32
    assert third.outputs[0].num_cached_tokens == 32
    stats = engine.stats()
    # looked up once (the resumed request has computed tokens, so no second lookup)
    assert (
        stats.prefix_cache_queries,
        stats.external_prefix_cache_queries,
        stats.external_prefix_cache_hits,
    ) == (50, 50, 32)


def test_delayed_free_holds_blocks_until_store_finishes():
    fake = FakeConnector(hold_on_finish=True)
    engine = engine_with(fake)
    engine.add_request(make_request("a", list(range(40)), max_tokens=1))
    engine.step(0.0)
    assert ("finished", "a", [1, 2, 3]) in fake.calls
    assert engine.pool.num_free_blocks() == 7
    fake.stores_done = ["a"]
    engine.step(0.1)
    assert engine.pool.num_free_blocks() == 10


def test_reset_prefix_cache_resets_the_connector():
    fake = FakeConnector()
    engine = engine_with(fake)
    assert engine.reset_prefix_cache() is True
    assert ("reset",) in fake.calls


def install_factory(monkeypatch, build_connector):
    module = types.ModuleType("kvbench.emulator.tiers.factory")
    module.build_connector = build_connector
    monkeypatch.setitem(sys.modules, "kvbench.emulator.tiers.factory", module)


def test_build_engine_uses_the_tiers_factory(monkeypatch):
    seen = {}

    def build_connector(args, facts, **_options):
        seen["facts"] = facts
        return FakeConnector()

    install_factory(monkeypatch, build_connector)
    engine = build_engine(make_args(kv_transfer_config={"kv_connector": "OffloadingConnector"}))
    assert isinstance(engine.connector, FakeConnector)
    facts = seen["facts"]
    assert (facts.gpu_block_size, facts.kv_bytes_per_token, facts.num_gpu_blocks) == (16, 1024, 11)
    assert facts.host_link_bytes_per_s == 55e9


def test_unknown_connector_is_a_user_error_naming_the_flag(monkeypatch):
    def build_connector(args, facts, **_options):
        raise ValueError("unknown kv_connector 'Nope'")

    install_factory(monkeypatch, build_connector)
    with pytest.raises(UserError, match="--kv-transfer-config"):
        build_engine(make_args(kv_transfer_config={"kv_connector": "Nope"}))


@pytest.mark.parametrize(
    "overrides, flag",
    [
        ({"block_size": 12}, "--block-size"),
        ({"tensor_parallel_size": 3}, "--tensor-parallel-size"),
        ({"max_num_seqs": 0}, "--max-num-seqs"),
        ({"gpu_memory_utilization": 1.5}, "--gpu-memory-utilization"),
        ({"num_gpu_blocks_override": 1}, "--num-gpu-blocks-override"),
        ({"max_model_len": 100000}, "--max-model-len"),
        ({"max_model_len": 4096}, "--max-model-len"),  # 11 blocks of 16 cannot hold 4096 tokens
        ({"max_num_batched_tokens": 4}, "--max-num-batched-tokens"),
        ({"prefix_caching_hash_algo": "md5"}, "--prefix-caching-hash-algo"),
        ({"hardware": "TPU"}, "--hardware"),
    ],
)
def test_bad_arguments_name_their_flag(overrides, flag):
    with pytest.raises(UserError, match=flag):
        build_engine(make_args(**overrides))


def test_default_batch_limits_follow_vllm_online_defaults():
    def limits(hardware):
        args = make_args(
            hardware=hardware,
            max_num_batched_tokens=None,
            num_gpu_blocks_override=None,
            model="Qwen/Qwen3-8B",
            max_model_len=None,
            max_num_seqs=None,
        )
        limits = build_engine(args).scheduler.limits
        return limits.max_num_batched_tokens, limits.max_num_seqs

    assert [limits(h) for h in ("H100-SXM", "H200", "A100-80GB", "L40S")] == [
        (8192, 1024),
        (8192, 1024),
        (2048, 256),
        (2048, 256),
    ]


def test_engine_keeps_stepping_while_a_store_holds_blocks():
    fake = FakeConnector(hold_on_finish=True)
    engine = engine_with(fake)
    engine.add_request(make_request("a", list(range(40)), max_tokens=1))
    engine.step(0.0)
    assert engine.requests == {} and engine.has_unfinished_requests()
    fake.stores_done = ["a"]
    idle = engine.step(0.1)
    assert idle.outputs == [] and idle.duration_s == engine.cost.params.step_overhead_s
    assert not engine.has_unfinished_requests()
