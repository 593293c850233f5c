"""A cheap OpenAI-compatible mock for tests and loadgen benchmarks (not the emulator: no engine).

Serves /v1/completions and /v1/chat/completions (streaming and not), /v1/models (with
max_model_len), /health, /metrics (a few vllm: series) and /mock/stats (what it saw: request
count, peak in-flight, each request's own time to first byte keyed by x-request-id).
Behaviour knobs: time to first token, inter-token latency, tokens per chunk, whether
`return_token_ids` / `min_tokens` are accepted, a block-level prefix cache that reports
`usage.prompt_tokens_details.cached_tokens` + `x-kvbench-kv-hits`, and failure injection
(`fault_every` N-th request gets `fault`): http500, drop (connection closed mid-stream), malformed
(a non-JSON event), truncate (stream ends without [DONE]), error_event (vLLM's in-stream error),
slow (waits `slow_s` before answering). Output token i of a request is id (7*i + 11) % vocab.
Run: python -m kvbench.loadgen.mock_server --port P [--ttft-ms ..] [--itl-ms ..] ...
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web

FAULTS = ("none", "http500", "drop", "malformed", "truncate", "error_event", "slow")


@dataclass
class MockConfig:
    model: str = "mock-model"
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tokens_per_chunk: int = 1
    vocab: int = 4096
    max_model_len: int = 4096
    return_token_ids: bool = (
        True  # accept the field and return ids (False: ignore it, as old servers do)
    )
    min_tokens: bool = True  # False: answer 400 when the request has min_tokens
    cached_tokens: bool = True  # report usage.prompt_tokens_details.cached_tokens
    block_size: int = 16
    endpoint_name: str | None = None  # sent as x-kvbench-endpoint when set
    fault: str = "none"
    fault_every: int = 0  # 0: never; N: requests N, 2N, ... (1-based arrival order) get the fault
    slow_s: float = 5.0
    record_timings: bool = False


@dataclass
class MockState:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cache_queries: int = 0
    cache_hits: int = 0
    cached_blocks: set = field(default_factory=set)
    ttfb_ms: dict[str, float] = field(default_factory=dict)
    # x-request-id -> (handler entry, first body byte written), time.perf_counter() seconds: on Linux
    # that is CLOCK_MONOTONIC, shared by all processes, so a client on this host can line them up.
    timings_perf: dict[str, tuple[float, float]] = field(default_factory=dict)


def _cached_prefix_tokens(state: MockState, prompt_ids: list[int], block_size: int) -> int:
    """Longest prefix of full blocks seen before (chained by prefix); then remember all blocks."""
    hit_blocks, still_hitting, parent = 0, True, None
    for start in range(0, len(prompt_ids) - block_size + 1, block_size):
        key = hash((parent, tuple(prompt_ids[start : start + block_size])))
        if still_hitting and key in state.cached_blocks:
            hit_blocks += 1
        else:
            still_hitting = False
            state.cached_blocks.add(key)
        parent = key
    return hit_blocks * block_size


class MockServer:
    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.state = MockState()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/mock/stats", self._stats)
        return app

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        received = time.perf_counter()
        state, config = self.state, self.config
        state.requests += 1
        index = state.requests
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            body = orjson.loads(await request.read())
            if "min_tokens" in body and not config.min_tokens:
                return _error(400, "min_tokens is not a valid field", "BadRequestError")
            fault = (
                config.fault if config.fault_every and index % config.fault_every == 0 else "none"
            )
            if fault == "http500":
                return _error(500, f"injected failure on request {index}", "InternalServerError")
            if fault == "slow":
                await asyncio.sleep(config.slow_s)
            prompt_tokens = _prompt_tokens(body, chat)
            cached = (
                _cached_prefix_tokens(state, body.get("prompt") or [], config.block_size)
                if not chat
                else 0
            )
            state.prompt_tokens += prompt_tokens
            state.cache_queries += prompt_tokens
            state.cache_hits += cached
            reply = _Reply(self, request, body, chat, prompt_tokens, cached, received)
            if body.get("stream"):
                return await reply.stream(fault)
            return await reply.whole()
        finally:
            state.in_flight -= 1

    async def _models(self, request: web.Request) -> web.Response:
        model = {
            "id": self.config.model,
            "object": "model",
            "owned_by": "kvbench-mock",
            "max_model_len": self.config.max_model_len,
        }
        return web.json_response({"object": "list", "data": [model]})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _metrics(self, request: web.Request) -> web.Response:
        labels = f'engine="0",model_name="{self.config.model}"'
        s = self.state
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{labels}}} {s.in_flight}",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{labels}}} 0",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{labels}}} 0.0",
            "# TYPE vllm:prefix_cache_queries_total counter",
            f"vllm:prefix_cache_queries_total{{{labels}}} {s.cache_queries}",
            "# TYPE vllm:prefix_cache_hits_total counter",
            f"vllm:prefix_cache_hits_total{{{labels}}} {s.cache_hits}",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{labels}}} {s.prompt_tokens}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{labels}}} {s.generated_tokens}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _stats(self, request: web.Request) -> web.Response:
        s = self.state
        return web.json_response(
            {
                "requests": s.requests,
                "max_in_flight": s.max_in_flight,
                "generated_tokens": s.generated_tokens,
                "ttfb_ms": s.ttfb_ms,
                "timings_perf": s.timings_perf,
            }
        )


def _prompt_tokens(body: dict, chat: bool) -> int:
    if chat:  # the mock has no tokenizer: whitespace words stand in for tokens
        return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    prompt = body.get("prompt") or []
    return len(prompt) if isinstance(prompt, list) else len(str(prompt).split())


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": status}}, status=status
    )


class _Reply:
    """One response: the tokens to send and how (stream of chunks, or one body)."""

    def __init__(
        self,
        server: MockServer,
        request: web.Request,
        body: dict,
        chat: bool,
        prompt_tokens: int,
        cached: int,
        received: float,
    ) -> None:
        self.server, self.request, self.chat, self.received = server, request, chat, received
        config = server.config
        self.ids_wanted = bool(body.get("return_token_ids")) and config.return_token_ids
        self.n_tokens = int(body.get("max_tokens") or 16)
        self.usage: dict[str, object] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": self.n_tokens,
            "total_tokens": prompt_tokens + self.n_tokens,
        }
        if config.cached_tokens:
            self.usage["prompt_tokens_details"] = {"cached_tokens": cached}
        self.headers = {"x-kvbench-kv-hits": f"gpu={cached},cpu=0,remote=0"}
        if config.endpoint_name:
            self.headers["x-kvbench-endpoint"] = config.endpoint_name
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def _token_ids(self, start: int, count: int) -> list[int]:
        vocab = self.server.config.vocab
        return [(7 * i + 11) % vocab for i in range(start, start + count)]

    def _choice(self, ids: list[int], finish: str | None) -> dict:
        text = "".join(f" t{i}" for i in ids)
        choice: dict = {"index": 0, "finish_reason": finish}
        if self.chat:
            choice["delta"] = {"content": text}
        else:
            choice["text"] = text
        if self.ids_wanted:
            choice["token_ids"] = ids
        return choice

    def _note_first_byte(self) -> None:
        if self.server.config.record_timings:
            rid = self.request.headers.get("x-request-id", "")
            now = time.perf_counter()
            self.server.state.ttfb_ms[rid] = (now - self.received) * 1000.0
            self.server.state.timings_perf[rid] = (self.received, now)

    async def whole(self) -> web.Response:
        config = self.server.config
        await asyncio.sleep((config.ttft_ms + config.itl_ms * max(0, self.n_tokens - 1)) / 1000.0)
        ids = self._token_ids(0, self.n_tokens)
        choice = self._choice(ids, "length")
        if self.chat:
            choice["message"] = {"role": "assistant", "content": choice.pop("delta")["content"]}
        self.server.state.generated_tokens += self.n_tokens
        self._note_first_byte()
        obj = {
            "id": "cmpl-mock",
            "object": "text_completion",
            "model": config.model,
            "choices": [choice],
            "usage": self.usage,
        }
        return web.Response(
            body=orjson.dumps(obj), content_type="application/json", headers=self.headers
        )

    async def stream(self, fault: str) -> web.StreamResponse:
        config = self.server.config
        if config.ttft_ms:
            await asyncio.sleep(config.ttft_ms / 1000.0)
        resp = web.StreamResponse(headers={**self.headers, "Content-Type": "text/event-stream"})
        await resp.prepare(self.request)
        self._note_first_byte()
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        sent, per_chunk, half = 0, max(1, config.tokens_per_chunk), self.n_tokens // 2
        while sent < self.n_tokens:
            if sent and config.itl_ms:
                await asyncio.sleep(config.itl_ms / 1000.0)
            if sent >= half and fault in ("drop", "malformed", "truncate", "error_event"):
                return await self._break_stream(resp, fault)
            count = min(per_chunk, self.n_tokens - sent)
            finish = "length" if sent + count == self.n_tokens else None
            chunk = {
                "id": "cmpl-mock",
                "object": kind,
                "model": config.model,
                "choices": [self._choice(self._token_ids(sent, count), finish)],
            }
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            sent += count
            self.server.state.generated_tokens += count
        if self.include_usage:
            final = {
                "id": "cmpl-mock",
                "object": kind,
                "model": config.model,
                "choices": [],
                "usage": self.usage,
            }
            await resp.write(b"data: " + orjson.dumps(final) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _break_stream(self, resp: web.StreamResponse, fault: str) -> web.StreamResponse:
        if fault == "drop":
            assert self.request.transport is not None
            self.request.transport.abort()  # the client sees the connection die mid-body
            return resp
        if fault == "malformed":
            await resp.write(b'data: {"choices": [{"text": \n\n')
        elif fault == "error_event":
            err = {
                "error": {
                    "message": "injected engine error",
                    "type": "InternalServerError",
                    "code": 500,
                }
            }
            await resp.write(b"data: " + orjson.dumps(err) + b"\n\n")
        await resp.write_eof()  # truncate: a clean end of the body, but no [DONE]
        return resp


def parse_args(argv: list[str] | None = None) -> tuple[MockConfig, str, int]:
    parser = argparse.ArgumentParser(
        prog="python -m kvbench.loadgen.mock_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="mock-model")
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-chunk", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--no-return-token-ids", action="store_true")
    parser.add_argument("--no-min-tokens", action="store_true")
    parser.add_argument("--no-cached-tokens", action="store_true")
    parser.add_argument("--endpoint-name", default=None)
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--fault-every", type=int, default=0)
    parser.add_argument("--slow-s", type=float, default=5.0)
    parser.add_argument("--record-timings", action="store_true")
    args = parser.parse_args(argv)
    config = MockConfig(
        model=args.model,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        tokens_per_chunk=args.tokens_per_chunk,
        max_model_len=args.max_model_len,
        return_token_ids=not args.no_return_token_ids,
        min_tokens=not args.no_min_tokens,
        cached_tokens=not args.no_cached_tokens,
        endpoint_name=args.endpoint_name,
        fault=args.fault,
        fault_every=args.fault_every,
        slow_s=args.slow_s,
        record_timings=args.record_timings,
    )
    return config, args.host, args.port


def main(argv: list[str] | None = None) -> None:
    config, host, port = parse_args(argv)
    web.run_app(
        MockServer(config).app(), host=host, port=port, access_log=None, print=None, backlog=4096
    )


if __name__ == "__main__":
    main()
