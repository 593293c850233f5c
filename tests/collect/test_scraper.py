import asyncio
import json
import socket

import aiohttp
from aiohttp import web

from kvbench.collect.scraper import MetricsScraper


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_metrics_server(counter):
    async def metrics(request):
        counter["n"] += 1
        return web.Response(
            text=f'# TYPE hits_total counter\nhits_total{{engine="0"}} {counter["n"]}\n'
            f'hits_created{{engine="0"}} 17.0\n'
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/metrics"


async def test_scrape_rows_and_failures_are_counted():
    counter = {"n": 0}
    runner, url = await start_metrics_server(counter)
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    rows = []
    scraper = MetricsScraper(
        {"engine-0": url, "gone": dead}, interval_s=0.05, now_s=lambda: 1.5, on_rows=rows.extend
    )
    try:
        async with aiohttp.ClientSession() as session:
            await scraper.scrape_once(session)
            await scraper.scrape_once(session)
    finally:
        await runner.cleanup()
    # *_created samples are dropped; the value follows the server's counter
    assert rows == [
        {
            "ts_s": 1.5,
            "source": "engine-0",
            "metric": "hits_total",
            "labels": json.dumps({"engine": "0"}).replace(" ", ""),
            "value": 1.0,
        },
        {
            "ts_s": 1.5,
            "source": "engine-0",
            "metric": "hits_total",
            "labels": '{"engine":"0"}',
            "value": 2.0,
        },
    ]
    assert scraper.stats.ok == {"engine-0": 2} and scraper.stats.failed == {"gone": 2}
    assert "gone" in scraper.stats.last_error


async def test_run_loop_keeps_going_past_failures_and_stops_on_event():
    counter = {"n": 0}
    runner, url = await start_metrics_server(counter)
    rows = []
    stop = asyncio.Event()
    scraper = MetricsScraper(
        {"engine-0": url, "bad": url.replace("/metrics", "/missing")},
        0.02,
        now_s=lambda: 0.0,
        on_rows=rows.extend,
    )
    task = asyncio.create_task(scraper.run(stop))
    while counter["n"] < 4:
        await asyncio.sleep(0.01)
    stop.set()
    await task
    await runner.cleanup()
    assert scraper.stats.failed["bad"] >= 4 and scraper.stats.last_error["bad"] == "HTTP 404"
    assert len(rows) == scraper.stats.ok["engine-0"] >= 5  # 4 loop scrapes + the final one
