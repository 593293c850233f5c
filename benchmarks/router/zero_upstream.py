"""A zero-delay OpenAI-ish upstream for the router benchmark (run as its own process).

Usage: python zero_upstream.py PORT. Answers /v1/completions at once with a small JSON body and
/metrics with an idle vLLM's gauges."""

from __future__ import annotations

import sys

from aiohttp import web

BODY = (
    b'{"id":"x","object":"text_completion","choices":[{"index":0,"text":" ok","finish_reason":"length"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)
METRICS = (
    b'vllm:num_requests_waiting{engine="0",model_name="m"} 0\n'
    b'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.0\n'
    b'vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="10000"} 1.0\n'
)


async def completions(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=METRICS, content_type="text/plain")


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/metrics", metrics)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
