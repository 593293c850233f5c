"""The OpenAI HTTP front of one emulated engine (aiohttp), and an in-process starter.

Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,
GET /metrics, POST /reset_prefix_cache, GET /version.

Per-request tier attribution: response header `x-kvbench-kv-hits: gpu=N,cpu=N,remote=N` and
`usage.kvbench`. A streamed response's headers are sent when the engine first reports the request
(its prefix lookup is done: at the first step output for it, at the latest with its first token),
so the header is known at the first byte. `x-kvbench-endpoint: host:port` names the engine.
A client that disconnects aborts its engine request (its blocks are freed).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from kvbench.emulator.api import protocol as proto
from kvbench.emulator.api.args import ServeOptions
from kvbench.emulator.api.driver import EngineDriver, RequestStream
from kvbench.emulator.api.kv_events import ZmqEventPublisher, make_publisher
from kvbench.emulator.api.metrics import ServerMetrics
from kvbench.emulator.api.sse import DONE, StreamEncoder, chat_body, completion_body
from kvbench.emulator.api.tokenizer import Tokenizer, load_tokenizer
from kvbench.emulator.engine.interface import Engine, EngineArgs, EngineRequest, FinishReason

EMULATED_VLLM_VERSION = "0.11.2"
_JSON = "application/json"


def resolve_max_model_len(engine: Engine, args: EngineArgs) -> int:
    """The engine's own value if it exposes one, else the flag, else the catalog's context length."""
    value = getattr(engine, "max_model_len", None) or args.max_model_len
    if value:
        return int(value)
    from kvbench.spec.catalogs import get_model

    return get_model(args.model).max_context_tokens


def _cache_info(args: EngineArgs) -> dict[str, str]:
    kv_conf = args.kv_transfer_config or {}
    return {
        "cache_dtype": "auto",
        "enable_prefix_caching": str(args.enable_prefix_caching),
        "gpu_memory_utilization": str(args.gpu_memory_utilization),
        "num_gpu_blocks_override": str(args.num_gpu_blocks_override),
        "prefix_caching_hash_algo": args.prefix_caching_hash_algo,
        "kv_offloading_backend": str(kv_conf.get("kv_connector", "None")),
    }


class EngineServer:
    """Owns one engine, its driver, metrics and KV-event publisher; serves them over HTTP."""

    def __init__(
        self,
        engine: Engine,
        options: ServeOptions,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        args = options.engine_args
        self.args = args
        self.engine = engine
        self.model_name = args.served_model_name or args.model
        self.served_names = (self.model_name, args.model)
        self.max_model_len = resolve_max_model_len(engine, args)
        self.tokenizer = tokenizer or load_tokenizer(options.tokenizer_dir)
        self._wall_clock = wall_clock
        self.publisher: ZmqEventPublisher | None = make_publisher(args.kv_events_config, args.env)
        publisher = self.publisher
        self.metrics = ServerMetrics(
            engine.stats,
            self.model_name,
            options.engine_label,
            self.max_model_len,
            _cache_info(args),
            lambda: publisher.num_dropped if publisher else 0,
        )
        self.driver = EngineDriver(
            engine,
            clock,
            stream_interval=options.stream_interval,
            observer=self.metrics,
            on_kv_events=publisher.publish if publisher else None,
        )
        self.endpoint = f"{options.host}:{options.port}"  # corrected once bound
        self._id_prefix = os.urandom(6).hex()
        self._next_id = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_post("/reset_prefix_cache", self.reset_prefix_cache)
        app.router.add_get("/version", self.version)
        return app

    # ---- small endpoints ----

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": EMULATED_VLLM_VERSION, "emulated": True})

    async def models(self, request: web.Request) -> web.Response:
        created = int(self._wall_clock())
        card = {
            "id": self.model_name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": self.args.model,
            "parent": None,
            "max_model_len": self.max_model_len,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def reset_prefix_cache(self, request: web.Request) -> web.Response:
        if self.engine.reset_prefix_cache():
            return web.Response(status=200)
        err = proto.ApiError(
            "Failed to reset the prefix cache: some blocks are still in use.", status=400
        )
        return web.Response(status=400, body=err.body(), content_type=_JSON)

    # ---- generation ----

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = proto.parse_body(await request.read())
            proto.check_model(body, self.served_names)
            params = proto.parse_generation(body, chat, self.tokenizer, self.max_model_len)
        except proto.ApiError as err:
            return web.Response(status=err.status, body=err.body(), content_type=_JSON)
        self._next_id += 1
        response_id = f"{'chatcmpl' if chat else 'cmpl'}-{self._id_prefix}{self._next_id:010x}"
        engine_request = EngineRequest(
            request_id=f"{response_id}-0",
            prompt_token_ids=params.prompt_token_ids,
            max_tokens=params.max_tokens,
            arrival_s=self.driver.clock(),
            ignore_eos=params.ignore_eos,
            sampling_seed=params.seed,
            cache_salt=params.cache_salt,
            kv_transfer_params=params.kv_transfer_params,
        )
        stream = self.driver.submit(engine_request)
        try:
            if params.stream:
                return await self._stream(request, stream, params, response_id)
            return await self._complete(stream, params, response_id)
        finally:
            if not stream.finished:
                self.driver.abort(engine_request.request_id)

    def _headers(self, stream: RequestStream, content_type: str) -> dict[str, str]:
        return {
            "Content-Type": content_type,
            "x-kvbench-kv-hits": proto.hits_header(stream.hits),
            "x-kvbench-endpoint": self.endpoint,
        }

    def _usage(self, stream: RequestStream, include_null_details: bool) -> dict:
        return proto.usage(
            stream.num_prompt_tokens,
            len(stream.output_token_ids),
            stream.num_cached_tokens,
            stream.hits,
            self.args.enable_prompt_tokens_details,
            include_null_details,
        )

    async def _complete(
        self, stream: RequestStream, params: proto.GenerationParams, response_id: str
    ) -> web.Response:
        while await stream.next_tokens() is not None:
            pass
        token_ids = stream.output_token_ids
        finish = stream.finish_reason.value if stream.finish_reason else None
        render = chat_body if params.chat else completion_body
        body = render(
            response_id,
            int(self._wall_clock()),
            self.model_name,
            self.tokenizer.decode(token_ids),
            finish,
            params.prompt_token_ids if params.return_token_ids else None,
            list(token_ids) if params.return_token_ids else None,
            self._usage(stream, True),
        )
        return web.Response(body=body, headers=self._headers(stream, _JSON))

    async def _stream(
        self,
        request: web.Request,
        stream: RequestStream,
        params: proto.GenerationParams,
        response_id: str,
    ) -> web.StreamResponse:
        await stream.wait_scheduled()
        response = web.StreamResponse(headers=self._headers(stream, "text/event-stream"))
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(request)
        encoder = StreamEncoder(
            params.chat,
            response_id,
            int(self._wall_clock()),
            self.model_name,
            params.return_token_ids,
            params.prompt_token_ids,
        )
        try:
            await self._write_stream(response, stream, params, encoder)
        except ConnectionResetError:
            pass  # the client went away mid-stream; the caller aborts the engine request
        return response

    async def _write_stream(
        self,
        response: web.StreamResponse,
        stream: RequestStream,
        params: proto.GenerationParams,
        encoder: StreamEncoder,
    ) -> None:
        if params.chat:
            await response.write(encoder.role_chunk())
        first, sent_finish = True, False
        while (batch := await stream.next_tokens()) is not None:
            last = stream.finished and not stream.has_pending
            finish = self._finish_text(stream) if last else None
            await response.write(
                encoder.token_chunk(self.tokenizer.decode(batch), batch, finish, first)
            )
            first, sent_finish = False, finish is not None
        if not sent_finish and stream.finish_reason not in (None, FinishReason.ABORT):
            await response.write(encoder.token_chunk("", [], self._finish_text(stream), first))
        if params.include_usage:
            await response.write(encoder.usage_chunk(self._usage(stream, False)))
        await response.write(DONE)
        await response.write_eof()

    @staticmethod
    def _finish_text(stream: RequestStream) -> str | None:
        return stream.finish_reason.value if stream.finish_reason else None

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.shutdown()


@dataclass
class EngineHandle:
    """A running emulated engine in this process."""

    server: EngineServer
    host: str
    port: int
    _runner: web.AppRunner
    _driver_task: asyncio.Task

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        self.server.driver.stop()
        await self._driver_task
        await self._runner.cleanup()
        self.server.close()


async def start_server(server: EngineServer, host: str, port: int) -> EngineHandle:
    runner = web.AppRunner(server.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        server.close()
        raise
    bound_port = runner.addresses[0][1]
    server.endpoint = f"{host}:{bound_port}"
    driver_task = asyncio.create_task(server.driver.run(), name="engine-driver")
    return EngineHandle(server, host, bound_port, runner, driver_task)


async def start_emulated_engine(
    args: EngineArgs,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    engine: Engine | None = None,
    stream_interval: int = 1,
    tokenizer_dir: str | None = None,
) -> EngineHandle:
    """Start one emulated engine on host:port (0 = a free port) inside the running event loop.
    `engine` defaults to `build_engine(args)`; tests may pass their own."""
    if engine is None:
        from kvbench.emulator.engine.build import build_engine

        engine = build_engine(args)
    options = ServeOptions(
        engine_args=args,
        host=host,
        port=port,
        stream_interval=stream_interval,
        tokenizer_dir=tokenizer_dir,
    )
    return await start_server(EngineServer(engine, options), host, port)
