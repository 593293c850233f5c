"""A tiny fake vLLM server for the proxy tests: scripted /metrics, SSE that waits for the test."""

from __future__ import annotations

import asyncio

from aiohttp import web

from kvbench.emulator.stores import free_port


class FakeVllm:
    def __init__(self, port: int | None = None, waiting: int = 0, usage: float = 0.0) -> None:
        self.port = port or free_port()
        self.waiting = waiting
        self.usage = usage
        self.requests: list[dict] = []
        self.release_stream = asyncio.Event()  # the second SSE chunk waits for this
        self.first_chunk_sent = asyncio.Event()
        self.disconnected = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FakeVllm:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def metrics(self, request: web.Request) -> web.Response:
        text = (
            f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {self.waiting}\n'
            f'vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {self.usage}\n'
            'vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="100"} 1.0\n'
        )
        return web.Response(text=text)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m"}]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if not body.get("stream"):
            return web.json_response(
                {"port": self.port}, headers={"x-kvbench-kv-hits": "gpu=16,cpu=0,remote=0"}
            )
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream",
                "x-kvbench-kv-hits": "gpu=32,cpu=0,remote=0",
            }
        )
        await response.prepare(request)
        try:
            await response.write(b'data: {"n": 1}\n\n')
            self.first_chunk_sent.set()
            await self.release_stream.wait()
            await response.write(b'data: {"n": 2}\n\ndata: [DONE]\n\n')
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnected.set()
            raise
        return response
