"""/metrics parses as Prometheus text, uses vLLM's names and labels, and its counters move."""

from __future__ import annotations

from emu_api_helpers import running_engine, tiny_args
from prometheus_client.parser import text_string_to_metric_families

from kvbench.emulator.api.metric_buckets import buckets_1_2_5
from kvbench.emulator.api.metrics import StepWork, _EngineStatsCollector
from kvbench.emulator.engine.interface import EngineStats

PROMPT_64 = list(range(300, 364))


async def _scrape(session) -> dict:
    async with session.get("/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _value(samples: dict, name: str, **labels) -> float:
    base = {"engine": "0", "model_name": "tiny", **labels}
    return samples[(name, tuple(sorted(base.items())))]


async def test_metrics_parse_and_counters_move():
    async with running_engine(tiny_args()) as (_, session):
        before = await _scrape(session)
        assert _value(before, "vllm:prompt_tokens_total") == 0
        for _ in range(2):
            async with session.post(
                "/v1/completions", json={"prompt": PROMPT_64, "max_tokens": 3}
            ) as resp:
                assert resp.status == 200
        after = await _scrape(session)
    assert _value(after, "vllm:prompt_tokens_total") == 128
    assert _value(after, "vllm:generation_tokens_total") == 6
    assert _value(after, "vllm:prefix_cache_queries_total") == 128
    assert _value(after, "vllm:prefix_cache_hits_total") == 48
    assert _value(after, "vllm:prompt_tokens_by_source_total", source="local_cache_hit") == 48
    assert _value(after, "vllm:prompt_tokens_by_source_total", source="local_compute") == 80
    assert _value(after, "vllm:prompt_tokens_cached_total") == 48
    assert _value(after, "vllm:prompt_tokens_cached_by_source_total", source="device") == 48
    assert _value(after, "vllm:request_success_total", finished_reason="length") == 2
    assert _value(after, "vllm:num_requests_running") == 0
    assert _value(after, "vllm:num_preemptions_total") == 0
    assert _value(after, "vllm:external_prefix_cache_hits_total") == 0
    assert _value(after, "vllm:e2e_request_latency_seconds_count") == 2
    assert _value(after, "vllm:time_to_first_token_seconds_count") == 2
    assert (
        _value(after, "vllm:inter_token_latency_seconds_count") == 4
    )  # 2 gaps per 3-token request
    assert _value(after, "vllm:request_time_per_output_token_seconds_count") == 2
    assert _value(after, "vllm:request_prompt_tokens_sum") == 128
    assert _value(after, "vllm:request_prompt_tokens_bucket", le="50.0") == 0
    assert _value(after, "vllm:request_prompt_tokens_bucket", le="100.0") == 2
    assert _value(after, "vllm:request_generation_tokens_sum") == 6
    assert _value(after, "vllm:iteration_tokens_total_sum") > 0
    steps = _value(after, "kvbench:engine_steps_total")
    assert steps >= 6 and _value(after, "kvbench:engine_step_lag_seconds_count") == steps
    info = [k for k in after if k[0] == "vllm:cache_config_info"]
    labels = dict(info[0][1])
    assert labels["block_size"] == "16" and labels["num_gpu_blocks"] == "64"
    assert (
        labels["enable_prefix_caching"] == "True"
        and labels["prefix_caching_hash_algo"] == "sha256_cbor"
    )


def test_connector_metrics_are_rendered_with_their_labels():
    stats = EngineStats(
        connector_metrics={
            "vllm:kv_offload_total_bytes_total|transfer_type=GPU_to_CPU": 4096.0,
            "vllm:kv_offload_total_bytes_total|transfer_type=CPU_to_GPU": 1024.0,
            "lmcache:local_cpu_usage_bytes": 77.0,
        }
    )
    collector = _EngineStatsCollector(
        lambda: stats,
        {"engine": "0", "model_name": "m"},
        {},
        lambda: {"lag_max_s": 0.0, "steps": 0, "kv_events_dropped": 0},
        StepWork(),
        0.0,
    )
    families = {f.name: f for f in collector.collect()}
    offload = families["vllm:kv_offload_total_bytes"]
    assert offload.type == "counter"
    assert {(s.labels["transfer_type"], s.value) for s in offload.samples} == {
        ("GPU_to_CPU", 4096.0),
        ("CPU_to_GPU", 1024.0),
    }
    assert families["lmcache:local_cpu_usage_bytes"].type == "gauge"
    assert families["lmcache:local_cpu_usage_bytes"].samples[0].labels == {
        "engine": "0",
        "model_name": "m",
    }


def test_token_buckets_follow_vllm_1_2_5_rule():
    assert buckets_1_2_5(4096) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]
