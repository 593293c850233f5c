"""A small vLLM-like OpenAI server for the runner's tests, on a free 127.0.0.1 port in a thread.

It keeps a real (tiny) prefix cache: 16-token blocks, chained by content; a request hits its
longest run of cached leading blocks (never the whole prompt: the last block is recomputed, as in
vLLM) and then caches all its full blocks. It reports usage.prompt_tokens_details.cached_tokens,
vLLM's prefix-cache counters on /metrics, /v1/models with max_model_len, and POST
/reset_prefix_cache (or 404 when `reset_supported` is False).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading

from aiohttp import web

BLOCK = 16


class KvEndpoint:
    def __init__(
        self, model: str = "tiny", max_model_len: int = 4096, reset_supported: bool = True
    ):
        self.model, self.max_model_len, self.reset_supported = model, max_model_len, reset_supported
        self.cache: set[tuple] = set()
        self.hits = self.queries = 0
        self.requests = 0
        self.fail_all = False
        self.port = _free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> KvEndpoint:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/reset_prefix_cache", self._reset)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _models(self, request):
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model,
                        "object": "model",
                        "root": self.model,
                        "max_model_len": self.max_model_len,
                    }
                ],
            }
        )

    async def _reset(self, request):
        if not self.reset_supported:
            return web.Response(status=404, text="Not Found")
        self.cache.clear()
        return web.Response(status=200)

    async def _metrics(self, request):
        labels = f'engine="0",model_name="{self.model}"'
        text = (
            f"# HELP vllm:prefix_cache_queries_total Prefix cache queries.\n"
            f"# TYPE vllm:prefix_cache_queries_total counter\n"
            f"vllm:prefix_cache_queries_total{{{labels}}} {float(self.queries)}\n"
            f"# HELP vllm:prefix_cache_hits_total Prefix cache hits.\n"
            f"# TYPE vllm:prefix_cache_hits_total counter\n"
            f"vllm:prefix_cache_hits_total{{{labels}}} {float(self.hits)}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    def _lookup_and_store(self, prompt: list[int], output: list[int]) -> int:
        blocks = [tuple(prompt[: (i + 1) * BLOCK]) for i in range(len(prompt) // BLOCK)]
        cached = 0
        for block in blocks:
            if block not in self.cache:
                break
            cached += BLOCK
        if cached == len(prompt):
            cached -= BLOCK
        self.hits += cached
        self.queries += len(prompt)
        full = prompt + output
        self.cache.update(tuple(full[: (i + 1) * BLOCK]) for i in range(len(full) // BLOCK))
        return cached

    async def _completions(self, request):
        body = await request.json()
        self.requests += 1
        if self.fail_all:
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        prompt, max_tokens = body["prompt"], int(body["max_tokens"])
        output = [1000 + i for i in range(max_tokens)]
        cached = self._lookup_and_store(list(prompt), output)
        usage = {
            "prompt_tokens": len(prompt),
            "completion_tokens": max_tokens,
            "total_tokens": len(prompt) + max_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        with_ids = bool(body.get("return_token_ids"))
        if not body.get("stream"):
            choice = {"index": 0, "text": " t" * max_tokens, "finish_reason": "length"}
            if with_ids:
                choice["token_ids"] = output
            return web.json_response({"id": "cmpl-1", "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for token in output:
            choice = {"index": 0, "text": " t", "finish_reason": None}
            if with_ids:
                choice["token_ids"] = [token]
            await response.write(_sse({"id": "cmpl-1", "choices": [choice]}))
        await response.write(_sse({"id": "cmpl-1", "choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        return response


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
