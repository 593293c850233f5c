"""The simulated scrape reads engine registries directly; it must give exactly the samples that
parsing their /metrics text gives (the live scraper's path)."""

from kvbench.collect.prometheus import parse_metrics
from kvbench.emulator.api.metrics import ServerMetrics
from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.interface import EngineArgs, EngineRequest
from kvbench.simulate.cell import registry_samples
from kvbench.simulate.engine_node import SimEngine
from kvbench.simulate.events import EventLoop


def _rows(samples):
    """Samples as comparable rows (the _created timestamps differ between reads)."""
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value, s.family, s.type)
        for s in samples
        if not s.name.endswith("_created")
    )


def test_registry_samples_equal_the_parsed_metrics_page():
    args = EngineArgs(
        model="Qwen/Qwen3-0.6B",
        hardware="L40S",
        num_gpu_blocks_override=64,
        max_model_len=512,
        max_num_seqs=8,
        kv_transfer_config={
            "kv_connector": "OffloadingConnector",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {"num_cpu_blocks": 64},
        },
    )
    engine = build_engine(args)
    metrics = ServerMetrics(engine.stats, "Qwen/Qwen3-0.6B", "0", 512, {"cache_dtype": "auto"})
    loop = EventLoop()
    node = SimEngine(loop, engine, metrics, "e:1")
    finished = []
    for i in range(5):
        request = EngineRequest(f"r{i}", list(range(100, 180 + 7 * i)), 6, arrival_s=0.0)
        node.submit(request, lambda stream, at_s, n: finished.append(stream.finished))
    loop.run(lambda: False)
    assert finished.count(True) == 5
    parsed = parse_metrics(metrics.render().decode())
    direct = registry_samples(metrics.registry)
    assert _rows(direct) == _rows(parsed)
    assert any(s.name == "vllm:generation_tokens_total" and s.value == 30 for s in direct)


def test_the_approximate_scorer_hashes_the_same_bytes_from_a_truncated_prompt():
    from kvbench.emulator.router.prefix_approx import user_input_bytes
    from kvbench.emulator.router.request import RouterRequest

    for ids in ([7] * 5000, list(range(100_000, 104_000)), [1, 22, 333] * 900):
        request = RouterRequest("r", "m", False, prompt_token_ids=ids)
        full = user_input_bytes(request)
        for max_chars in (64, 1000, 16384):
            assert user_input_bytes(request, max_chars)[:max_chars] == full[:max_chars]


def test_router_registry_samples_equal_its_parsed_metrics_page():
    from kvbench.emulator.router.endpoints import EndpointMetrics, EndpointPool
    from kvbench.emulator.router.metrics import EppMetrics

    pool = EndpointPool(["http://e0:1", "http://e1:1"], lambda: 0.0)
    for i, endpoint in enumerate(pool.endpoints):
        endpoint.health.ready = endpoint.health.ever_ready = True
        endpoint.metrics = EndpointMetrics(
            waiting_requests=3 * i, running_requests=2, kv_cache_usage=0.25 + i / 4
        )
    metrics = EppMetrics("pool")
    metrics.request_total.labels("m", "m").inc(4)
    metrics.request_duration_s.labels("m", "m").observe(0.3)
    parsed = parse_metrics(metrics.render(pool).decode())
    metrics.refresh(pool)
    direct = registry_samples(metrics.registry)
    assert _rows(direct) == _rows(parsed)
    assert any(s.name.endswith("average_kv_cache_utilization") and s.value == 0.375 for s in direct)
