"""The router as an HTTP proxy in front of fake vLLM servers: routing, headers, streaming,
decision log, metrics and faults (dead endpoint, frozen index store, client that goes away)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from router_fakes import FakeVllm

from kvbench.emulator.router.config import load_config_text
from kvbench.emulator.router.serve import Router, RouterOptions, main, parse_args
from kvbench.emulator.stores import free_port
from kvbench.errors import UserError

QUEUE_CONFIG = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
"""


async def wait_until(predicate, attempts: int = 200, step_s: float = 0.01) -> bool:
    """Poll a condition a bounded number of times (no timing assertion: just a bound)."""
    for _ in range(attempts):
        if predicate():
            return True
        await asyncio.sleep(step_s)
    return predicate()


@pytest.fixture
async def fakes():
    servers = [await FakeVllm(waiting=5).start(), await FakeVllm(waiting=0).start()]
    yield servers
    for server in servers:
        server.release_stream.set()
        await server.stop()


async def start_router(config_text: str, urls: list[str], tmp_path, **options) -> Router:
    options.setdefault("decision_log", tmp_path / "decisions.jsonl")
    return await Router(
        load_config_text(config_text), RouterOptions(endpoints=urls, **options)
    ).start()


async def test_routes_by_queue_streams_sse_unbuffered_and_sets_headers(fakes, tmp_path):
    busy, idle = fakes
    router = await start_router(QUEUE_CONFIG, [busy.url, idle.url], tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            body = {"model": "m", "prompt": "hello", "stream": True}
            async with session.post(router.url + "/v1/completions", json=body) as response:
                assert response.headers["x-kvbench-endpoint"] == idle.address
                assert response.headers["x-gateway-destination-endpoint"] == idle.address
                assert response.headers["x-kvbench-router-predicted-hit-tokens"] == "0"
                assert response.headers["x-kvbench-kv-hits"] == "gpu=32,cpu=0,remote=0"
                first = await response.content.readuntil(b"\n\n")
                assert (
                    first == b'data: {"n": 1}\n\n'
                )  # arrived while the engine still holds the rest
                idle.release_stream.set()
                assert await response.content.read() == b'data: {"n": 2}\n\ndata: [DONE]\n\n'
        assert busy.requests == [] and idle.requests == [body]
        record = json.loads((tmp_path / "decisions.jsonl").read_text().splitlines()[0])
        assert record["endpoint"] == idle.address
        assert record["scores"] == {"queue-scorer": {busy.address: 0.0, idle.address: 1.0}}
        assert record["totals"] == {busy.address: 0.0, idle.address: 1.0}
        assert record["weights"] == {"queue-scorer": 1.0}
    finally:
        await router.stop()


async def test_epp_metrics_use_gie_names(fakes, tmp_path):
    router = await start_router(QUEUE_CONFIG, [f.url for f in fakes], tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                router.url + "/v1/completions", json={"model": "m", "prompt": "x"}
            ) as response:
                assert (await response.json())["port"] == fakes[1].port
            async with session.get(router.url + "/metrics") as response:
                text = await response.text()
    finally:
        await router.stop()
    assert 'inference_objective_request_total{model_name="m",target_model_name="m"} 1.0' in text
    assert 'inference_pool_ready_pods{name="kvbench-pool"} 2.0' in text
    assert 'inference_pool_average_queue_size{name="kvbench-pool"} 2.5' in text
    for name in (
        "inference_objective_request_duration_seconds_bucket",
        "inference_extension_scheduler_e2e_duration_seconds_count",
        'inference_extension_plugin_duration_seconds_count{extension_point="Scorer",plugin_name="queue-scorer"',
        "inference_extension_prefix_indexer_size",
        "inference_extension_prefix_indexer_hit_ratio_bucket",
        "inference_pool_average_kv_cache_utilization",
    ):
        assert name in text


async def test_dead_endpoint_is_ejected_traffic_moves_and_it_is_readmitted(fakes, tmp_path):
    busy, idle = fakes
    router = await start_router(QUEUE_CONFIG, [busy.url, idle.url], tmp_path)
    try:
        await idle.stop()  # the preferred endpoint dies
        assert await wait_until(lambda: not router.pool.by_address(idle.address).ready)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                router.url + "/v1/completions", json={"model": "m", "prompt": "x"}
            ) as response:
                assert response.headers["x-kvbench-endpoint"] == busy.address
            await idle.start()  # back on the same port
            assert await wait_until(lambda: router.pool.by_address(idle.address).ready)
            async with session.post(
                router.url + "/v1/completions", json={"model": "m", "prompt": "x"}
            ) as response:
                assert response.headers["x-kvbench-endpoint"] == idle.address
    finally:
        await router.stop()


async def test_connection_error_reschedules_the_request_at_once(fakes, tmp_path):
    busy, idle = fakes
    router = await start_router(
        QUEUE_CONFIG, [busy.url, idle.url], tmp_path, refresh_interval_s=60.0
    )
    try:
        await idle.stop()  # the pool has not scraped since: it still believes idle is ready
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                router.url + "/v1/completions", json={"model": "m", "prompt": "x"}
            ) as response,
        ):
            assert response.status == 200
            assert response.headers["x-kvbench-endpoint"] == busy.address
        assert not router.pool.by_address(idle.address).ready
        records = [
            json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()
        ]
        assert [(r["endpoint"], r["retries"]) for r in records] == [
            (idle.address, 0),
            (busy.address, 1),
        ]
    finally:
        await router.stop()


async def test_no_ready_endpoint_is_503(tmp_path):
    router = await start_router(QUEUE_CONFIG, [f"http://127.0.0.1:{free_port()}"], tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                router.url + "/v1/completions", json={"model": "m", "prompt": "x"}
            ) as response:
                assert response.status == 503
            async with session.post(router.url + "/v1/completions", data=b"{not json") as response:
                assert response.status == 400
    finally:
        await router.stop()


async def test_client_that_disconnects_mid_stream_releases_the_upstream_request(fakes, tmp_path):
    busy, idle = fakes
    router = await start_router(QUEUE_CONFIG, [busy.url, idle.url], tmp_path)
    try:
        session = aiohttp.ClientSession()
        response = await session.post(
            router.url + "/v1/completions", json={"model": "m", "prompt": "x", "stream": True}
        )
        await response.content.readuntil(b"\n\n")
        response.close()  # the client goes away while the engine is still streaming
        await session.close()
        assert await wait_until(idle.disconnected.is_set, attempts=300)
    finally:
        await router.stop()


PRECISE_REDIS_CONFIG = """
plugins:
- type: precise-prefix-cache-scorer
  parameters:
    tokenProcessorConfig: {{blockSize: 16, hashSeed: "42"}}
    indexerConfig: {{kvBlockIndexConfig: {{redisConfig: {{address: "{address}"}}}}}}
    kvEventsConfig: {{zmqEndpoint: "tcp://127.0.0.1:{zmq_port}"}}
- type: queue-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: precise-prefix-cache-scorer
    weight: 2
  - pluginRef: queue-scorer
"""


async def test_frozen_index_store_scores_zero_and_routing_continues(fakes, tmp_path, redis_server):
    busy, idle = fakes
    config = PRECISE_REDIS_CONFIG.format(
        address=f"127.0.0.1:{redis_server.port}", zmq_port=free_port()
    )
    router = await start_router(config, [busy.url, idle.url], tmp_path)
    try:
        redis_server.pause()
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.post(
                    router.url + "/v1/completions", json={"model": "m", "prompt": list(range(64))}
                ) as response:
                    assert response.status == 200
                    assert (
                        response.headers["x-kvbench-endpoint"] == idle.address
                    )  # queue scorer decides
        records = [
            json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()
        ]
        assert all(
            r["scores"]["precise-prefix-cache-scorer"] == {busy.address: 0.0, idle.address: 0.0}
            for r in records
        )
        assert "index_error" in records[0]["scorer_details"]["precise-prefix-cache-scorer"]
    finally:
        redis_server.resume()
        await router.stop()


def test_cli_flags_are_checked_with_one_line_errors(tmp_path):
    config = tmp_path / "epp.yaml"
    config.write_text(QUEUE_CONFIG)
    with pytest.raises(UserError, match="--endpoint 'localhost:1': expected http"):
        parse_args(["--config", str(config), "--endpoint", "localhost:1"])
    with pytest.raises(UserError, match="--replay-endpoint 'x': expected POD=tcp"):
        parse_args(["--config", str(config), "--endpoint", "http://h:1", "--replay-endpoint", "x"])
    with pytest.raises(UserError, match="--refresh-metrics-interval"):
        parse_args(
            [
                "--config",
                str(config),
                "--endpoint",
                "http://h:1",
                "--refresh-metrics-interval",
                "soon",
            ]
        )
    with pytest.raises(UserError, match="required: --config"):
        main(["--endpoint", "http://h:1"])
    _, options = parse_args(
        [
            "--config",
            str(config),
            "--endpoint",
            "http://h:1",
            "--refresh-metrics-interval",
            "100ms",
            "--replay-endpoint",
            "h:1=tcp://h:5558",
        ]
    )
    assert (options.refresh_interval_s, options.replay_endpoints) == (0.1, {"h:1": "tcp://h:5558"})


def test_kvbench_cli_reports_a_bad_config_in_one_line_with_exit_2(tmp_path, capsys):
    from kvbench.cli import main as cli_main

    config = tmp_path / "epp.yaml"
    config.write_text("plugins:\n- type: no-such-scorer\n")
    assert (
        cli_main(["emulate", "router", "--config", str(config), "--endpoint", "http://127.0.0.1:1"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("kvbench: error:") and "plugin no-such-scorer: unknown type" in err
    assert "\n" not in err


async def test_zmq_endpoint_in_use_is_a_user_error(tmp_path):
    port = free_port()
    config = PRECISE_REDIS_CONFIG.replace("redisConfig", "inMemoryConfig").format(
        address="x", zmq_port=port
    )
    config = config.replace('{inMemoryConfig: {address: "x"}}', "{inMemoryConfig: {size: 10}}")
    first = await start_router(config, ["http://127.0.0.1:1"], tmp_path)
    try:
        with pytest.raises(UserError, match=f"zmqEndpoint tcp://127.0.0.1:{port}: cannot bind"):
            await start_router(config, ["http://127.0.0.1:1"], tmp_path)
    finally:
        await first.stop()
