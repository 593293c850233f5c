"""The router tells slow from dead: the health state machine, and the router in front of a fake
engine that is loaded (its /metrics answers late) but alive, then dead, then back."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from router_fakes import FakeVllm
from test_router_proxy import QUEUE_CONFIG, start_router, wait_until

from kvbench.emulator.router.health import EjectReason, EndpointHealth, HealthPolicy

POLICY = HealthPolicy(failures_to_eject=3, unresponsive_eject_s=10.0, readmit_successes=3)


def admitted() -> EndpointHealth:
    health = EndpointHealth(policy=POLICY, created_s=0.0)
    assert health.scrape_ok(0.0)  # start-up: the first good scrape admits
    return health


def test_timeouts_degrade_but_do_not_eject():
    health = admitted()
    for second in range(1, 10):
        assert health.scrape_timed_out(float(second)) is None
    assert health.ready and health.slow
    assert health.score_factor == POLICY.slow_score_factor
    assert health.slow_scrapes == 9 and health.ejections_total == 0
    health.scrape_ok(9.5)
    assert not health.slow and health.score_factor == 1.0


def test_an_unresponsive_endpoint_is_ejected_only_after_the_grace_period():
    health = admitted()
    assert health.scrape_timed_out(9.9) is None
    assert health.scrape_timed_out(10.0) == EjectReason.UNRESPONSIVE
    assert not health.ready and health.ejections == {"unresponsive": 1}


def test_connection_refused_ejects_at_once():
    health = admitted()
    assert health.connect_failed() == EjectReason.CONNECT
    assert not health.ready
    assert health.connect_failed() is None  # already out: counted once
    assert health.ejections == {"connect": 1}


def test_http_errors_eject_after_three_in_a_row():
    health = admitted()
    assert health.scrape_http_error() is None
    assert health.scrape_http_error() is None
    assert health.scrape_http_error() == EjectReason.HTTP_STATUS


def test_readmission_needs_several_good_scrapes_in_a_row():
    health = admitted()
    health.connect_failed()
    assert not health.scrape_ok(1.0)
    assert not health.scrape_ok(1.1)
    health.connect_failed()  # flapping: the count starts again
    assert not health.scrape_ok(1.2) and not health.scrape_ok(1.3)
    assert health.scrape_ok(1.4)
    assert health.ready and health.readmissions == 1


class SlowMetricsVllm(FakeVllm):
    """Serves completions at once but answers /metrics after `metrics_delay_s` (a loaded engine)."""

    metrics_delay_s = 0.0

    async def metrics(self, request):
        await asyncio.sleep(self.metrics_delay_s)
        return await super().metrics(request)


async def _post(session: aiohttp.ClientSession, url: str) -> tuple[int, str | None]:
    async with session.post(url + "/v1/completions", json={"model": "m", "prompt": "x"}) as r:
        await r.read()
        return r.status, r.headers.get("x-kvbench-endpoint")


def _series(text: str, name: str, address: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'endpoint="{address}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {address} not in /metrics")


async def test_a_loaded_but_alive_engine_is_never_ejected_and_a_dead_one_is(tmp_path):
    engine = await SlowMetricsVllm().start()
    router = await start_router(QUEUE_CONFIG, [engine.url], tmp_path, refresh_interval_s=0.05)
    try:
        assert router.pool.endpoints[0].ready
        engine.metrics_delay_s = 0.5  # every scrape (200 ms timeout) now times out
        statuses = []
        async with aiohttp.ClientSession() as session:
            for _ in range(15):  # ~1.5 s: many missed scrapes, no 503
                statuses.append((await _post(session, router.url))[0])
                await asyncio.sleep(0.1)
            async with session.get(router.url + "/metrics") as response:
                text = await response.text()
        assert statuses == [200] * 15
        health = router.pool.endpoints[0].health
        assert health.ready and health.slow and health.ejections_total == 0
        assert _series(text, "kvbench_router_endpoint_slow_scrapes_total", engine.address) >= 3
        assert _series(text, "kvbench_router_endpoint_slow", engine.address) == 1.0
        assert "kvbench_router_index_lookup_failures_total 0.0" in text
        assert "kvbench_router_kv_events_lost_total 0.0" in text

        await engine.stop()  # now dead: refused connections eject it at the next scrape
        assert await wait_until(lambda: not router.pool.endpoints[0].ready)
        assert health.ejections == {"connect": 1}

        engine.metrics_delay_s = 0.0
        await engine.start()  # back on the same port: re-admitted after three good scrapes
        assert await wait_until(lambda: router.pool.endpoints[0].ready)
        assert health.readmissions == 1
    finally:
        await router.stop()
        await engine.stop()


async def test_a_slow_endpoint_is_scored_down_not_removed(tmp_path):
    slow, fast = await SlowMetricsVllm().start(), await SlowMetricsVllm().start()
    router = await start_router(QUEUE_CONFIG, [slow.url, fast.url], tmp_path)
    try:
        slow.metrics_delay_s = 0.5
        assert await wait_until(lambda: router.pool.by_address(slow.address).health.slow)
        async with aiohttp.ClientSession() as session:
            chosen = [(await _post(session, router.url))[1] for _ in range(10)]
        assert chosen == [fast.address] * 10  # equal queues: the responsive one wins
        assert router.pool.by_address(slow.address).ready
        records = [json.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
        assert all(record.get("slow_endpoints") == [slow.address] for record in records[-10:])
    finally:
        await router.stop()
        await slow.stop()
        await fast.stop()


async def test_an_engine_slow_to_accept_is_retried_elsewhere_not_ejected(tmp_path, monkeypatch):
    import socket

    from kvbench.emulator.router import proxy

    monkeypatch.setattr(proxy, "CONNECT_TIMEOUT_S", 0.3)
    # An engine whose accept queue is full: it listens, accepts nothing, new SYNs are dropped.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(busy.getsockname())
        fillers.append(filler)
    busy_url = f"http://127.0.0.1:{busy.getsockname()[1]}"
    good = await SlowMetricsVllm(waiting=5).start()
    router = await start_router(QUEUE_CONFIG, [busy_url, good.url], tmp_path, refresh_interval_s=60)
    try:
        stuck = router.pool.endpoints[0]
        stuck.health.ready = stuck.health.ever_ready = True  # it was fine until the burst
        async with aiohttp.ClientSession() as session:
            status, served_by = await _post(session, router.url)
        assert status == 200 and served_by == good.address
        assert stuck.ready and stuck.health.ejections_total == 0 and stuck.health.slow
        records = [json.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
        assert [(r["endpoint"], r["retries"]) for r in records] == [
            (stuck.address, 0),  # tried first (lowest queue), did not accept in time
            (good.address, 1),
        ]
    finally:
        await router.stop()
        await good.stop()
        for filler in fillers:
            filler.close()
        busy.close()
