"""The tiers inside the real emulated engine (virtual time): GPU evicts, the CPU / remote tier serves.

Qwen3-8B with 12 GPU blocks of 16 tokens: prompt A (64 tokens), then B (128 tokens) evicts most of
A from the GPU, then A + 16 tokens comes back.
"""

from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.interface import EngineArgs, EngineRequest, TierHits
from kvbench.emulator.engine.virtual import VirtualDriver

PROMPT_A = list(range(1000, 1064))
PROMPT_B = list(range(2000, 2128))


def run_engine(kv_transfer_config, requests, env=None):
    args = EngineArgs(
        model="Qwen/Qwen3-8B",
        num_gpu_blocks_override=12,
        max_num_seqs=4,
        max_model_len=176,
        kv_transfer_config=kv_transfer_config,
        env=env or {"PYTHONHASHSEED": "0"},
    )
    engine = build_engine(args)
    driver = VirtualDriver(engine)
    driver.submit_all(requests)
    finished = {o.output.request_id: o.output for o in driver.run().outputs if o.output.finished}
    return engine, finished


def three_requests():
    return [
        EngineRequest("a1", PROMPT_A, 4, 0.0),
        EngineRequest("b", PROMPT_B, 4, 1.0),
        EngineRequest("a2", PROMPT_A + [7] * 16, 4, 2.0),
    ]


def test_native_offload_serves_the_evicted_prefix_from_cpu():
    config = {
        "kv_connector": "OffloadingConnector",
        "kv_role": "kv_both",
        "kv_connector_extra_config": {"num_cpu_blocks": 100},
    }
    engine, finished = run_engine(config, three_requests())
    assert finished["a2"].hits == TierHits(gpu_tokens=32, cpu_tokens=32)
    assert finished["a2"].num_cached_tokens == 64
    stats = engine.stats()
    assert stats.prompt_tokens_cached_by_source["host"] == 32
    assert stats.external_prefix_cache_hits == 32
    # a1: 4 blocks, b: 8 blocks, a2: 1 new block (its first 4 are on CPU already)
    assert stats.connector_metrics["kvbench:cpu_kv_cache_used_blocks|tier=cpu"] == 13
    assert (
        stats.connector_metrics["vllm:kv_offload_total_bytes_total|transfer_type=CPU_to_GPU"]
        == 32 * 147456
    )


def test_no_offload_recomputes_the_evicted_prefix():
    _, finished = run_engine(None, three_requests())
    assert finished["a2"].hits == TierHits(gpu_tokens=32)


def test_lmcache_remote_tier_is_shared_between_engines(redis_server):
    config = {
        "kv_connector": "LMCacheConnectorV1",
        "kv_role": "kv_both",
        "kv_connector_extra_config": {
            "lmcache.chunk_size": 32,
            "lmcache.remote_url": redis_server.url,
        },
    }
    run_engine(config, [EngineRequest("a1", PROMPT_A, 4, 0.0)])
    # a second engine process (same PYTHONHASHSEED): empty GPU and CPU, the chunks are in Redis
    engine, finished = run_engine(config, [EngineRequest("a2", PROMPT_A, 4, 0.0)])
    assert finished["a2"].hits == TierHits(
        remote_tokens=63
    )  # whole prompt hit: the last token is computed
    assert engine.stats().connector_metrics["lmcache:num_hit_tokens_total"] == 63


def test_lmcache_keys_differ_without_a_shared_hash_seed(redis_server):
    config = {
        "kv_connector": "LMCacheConnectorV1",
        "kv_role": "kv_both",
        "kv_connector_extra_config": {
            "lmcache.chunk_size": 32,
            "lmcache.remote_url": redis_server.url,
        },
    }
    run_engine(config, [EngineRequest("a1", PROMPT_A, 4, 0.0)], env={"PYTHONHASHSEED": "1"})
    _, finished = run_engine(
        config, [EngineRequest("a2", PROMPT_A, 4, 0.0)], env={"PYTHONHASHSEED": "2"}
    )
    assert finished["a2"].hits == TierHits()
