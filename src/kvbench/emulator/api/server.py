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
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from kvbench.emulator.api import protocol as proto
from kvbench.emulator.api.args import ServeOptions
from kvbench.emulator.api.driver import EngineDriver
from kvbench.emulator.api.generation import Generation, GenerationContext
from kvbench.emulator.api.kv_events import ZmqEventPublisher, make_publisher
from kvbench.emulator.api.metrics import ServerMetrics, WorkModel
from kvbench.emulator.api.prompts import tokenize_prompts
from kvbench.emulator.api.responses import hits_header, model_card, response_shape
from kvbench.emulator.api.sse import StreamEncoder
from kvbench.emulator.api.tokenizer import Tokenizer, load_tokenizer
from kvbench.emulator.engine.interface import Engine, EngineArgs

_JSON = "application/json"
# Bodies above this size are tokenized in a worker thread (a 20 MB prompt takes seconds).
OFF_LOOP_TOKENIZE_BYTES = 256 * 1024
_log = logging.getLogger(__name__)


def resolve_max_model_len(engine: Engine, args: EngineArgs) -> int:
    """The engine's own value if it exposes one, else the flag, else the catalog's context length."""
    value = getattr(engine, "max_model_len", None) or args.max_model_len
    if value:
        return int(value)
    from kvbench.spec.catalogs import get_model

    return get_model(args.model).max_context_tokens


# vLLM 0.32's CacheConfig labels the emulator has no notion of, at the CPU build's values.
_CACHE_INFO_032_STATIC = {
    "_block_size_resolved": "True",
    "cache_hit_alignment_tokens": "None",
    "enable_mamba_shared_prefix_checkpoint": "False",
    "hash_block_size": "None",
    "is_attention_free": "False",
    "kv_cache_dtype_skip_layers": "[]",
    "kv_cache_layout": "None",
    "kv_offloading_size": "None",
    "kv_sharing_fast_prefill": "False",
    "mamba_block_size": "None",
    "mamba_cache_dtype": "auto",
    "mamba_cache_mode": "none",
    "mamba_page_size_padded": "None",
    "mamba_ssm_cache_dtype": "float32",
    "num_cpu_blocks": "None",
    "prefix_cache_retention_interval": "0",
    "prefix_match_unit": "None",
    "replayssm_buffer_len": "16",
    "skip_page_size_padded": "None",
    "sliding_window": "None",
    "swa_bounded_replay": "True",
    "use_kda_recoverssm": "False",
    "use_replayssm": "False",
}


def _cache_info(args: EngineArgs, engine: Engine, max_model_len: int) -> dict[str, str]:
    """Labels of vllm:cache_config_info (block_size, num_gpu_blocks, kv_cache_size_tokens are
    added at scrape time from the engine's stats)."""
    kv_conf = args.kv_transfer_config or {}
    info = {
        "cache_dtype": "auto",
        "enable_prefix_caching": str(args.enable_prefix_caching),
        "gpu_memory_utilization": str(args.gpu_memory_utilization),
        "num_gpu_blocks_override": str(args.num_gpu_blocks_override),
        "prefix_caching_hash_algo": args.prefix_caching_hash_algo,
        "kv_offloading_backend": str(kv_conf.get("kv_connector", "None")),
    }
    if args.vllm_compat == "0.32":
        from kvbench.spec.catalogs import get_model

        stats = engine.stats()
        size_tokens = stats.block_size * stats.num_gpu_blocks
        info.update(_CACHE_INFO_032_STATIC)
        info.update(
            effective_attention_block_size=str(stats.block_size),
            user_specified_block_size="True",
            kv_cache_memory_bytes=str(size_tokens * get_model(args.model).kv_bytes_per_token),
            kv_cache_max_concurrency=str(round(size_tokens / max_model_len, 2)),
        )
    return info


def _max_token_id(model: str, tokenizer: Tokenizer) -> int:
    """The highest prompt token id accepted: vLLM takes the larger of the tokenizer's and the
    model's vocabulary (Qwen's embedding is padded beyond its tokenizer)."""
    from kvbench.spec.catalogs import get_model

    return max(get_model(model).vocab_size, tokenizer.max_token_id + 1) - 1


def _work_model(args: EngineArgs) -> WorkModel:
    from kvbench.spec.catalogs import get_model

    model, tp = get_model(args.model), args.tensor_parallel_size
    return WorkModel(
        flops_per_token=2.0 * model.linear_params / tp,
        read_bytes_per_step=model.streamed_weight_bytes / tp,
        write_bytes_per_token=model.kv_bytes_per_token / tp,
    )


def with_tokenizer(options: ServeOptions) -> tuple[ServeOptions, Tokenizer]:
    """Load the served tokenizer and bound the engine's generated ids by its vocabulary (so every
    generated id decodes to text). Call before building the engine."""
    tokenizer = load_tokenizer(options.tokenizer_dir)
    if tokenizer.vocab_size is not None:
        args = dataclasses.replace(options.engine_args, generated_vocab_size=tokenizer.vocab_size)
        options = dataclasses.replace(options, engine_args=args)
    return options, tokenizer


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
        self.model_root = options.model_root or args.model
        self.max_model_len = resolve_max_model_len(engine, args)
        self.tokenizer = tokenizer or load_tokenizer(options.tokenizer_dir)
        self.max_token_id = _max_token_id(args.model, self.tokenizer)
        self.shape = response_shape(args.vllm_compat)
        self._wall_clock = wall_clock
        self.publisher: ZmqEventPublisher | None = make_publisher(args.kv_events_config, args.env)
        publisher = self.publisher
        self.metrics = ServerMetrics(
            engine.stats,
            self.model_name,
            options.engine_label,
            self.max_model_len,
            _cache_info(args, engine, self.max_model_len),
            lambda: publisher.num_dropped if publisher else 0,
            _work_model(args),
        )
        self.driver = EngineDriver(
            engine,
            clock,
            stream_interval=options.stream_interval,
            observer=self.metrics,
            on_kv_events=publisher.publish if publisher else None,
        )
        self._context = GenerationContext(
            driver=self.driver,
            tokenizer=self.tokenizer,
            shape=self.shape,
            model_name=self.model_name,
            details_on=args.enable_prompt_tokens_details,
            vocab_size=args.generated_vocab_size or self.max_token_id + 1,
            on_finished=self.metrics.observe_request_group,
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
        return web.json_response({"version": self.shape.version, "emulated": True})

    async def models(self, request: web.Request) -> web.Response:
        card = model_card(
            self.shape,
            self.model_name,
            self.model_root,
            self.max_model_len,
            int(self._wall_clock()),
        )
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

    async def _parse(self, raw: bytes, chat: bool) -> proto.GenerationParams:
        body = proto.parse_body(raw)
        proto.check_model(body, self.served_names)
        params = proto.parse_options(body, chat)
        args = (body, chat, self.tokenizer, self.max_model_len, self.max_token_id)
        if len(raw) > OFF_LOOP_TOKENIZE_BYTES:  # keep /health and /metrics answering meanwhile
            params.prompts = await asyncio.to_thread(tokenize_prompts, *args)
        else:
            params.prompts = tokenize_prompts(*args)
        proto.check_min_tokens(params)
        return params

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            params = await self._parse(await request.read(), chat)
        except proto.ApiError as err:
            return web.Response(status=err.status, body=err.body(), content_type=_JSON)
        self._next_id += 1
        response_id = f"{'chatcmpl' if chat else 'cmpl'}-{self._id_prefix}{self._next_id:010x}"
        generation = Generation(self._context, params, response_id, int(self._wall_clock()))
        generation.submit()
        try:
            if params.stream:
                return await self._stream(request, generation)
            body = await generation.complete()
            return web.Response(body=orjson.dumps(body), headers=self._headers(generation, _JSON))
        finally:
            generation.abort()

    def _headers(self, generation: Generation, content_type: str) -> dict[str, str]:
        return {
            "Content-Type": content_type,
            "x-kvbench-kv-hits": hits_header(generation.first_hits()),
            "x-kvbench-endpoint": self.endpoint,
        }

    async def _stream(self, request: web.Request, generation: Generation) -> web.StreamResponse:
        for choice in generation.choices:
            await choice.stream.wait_scheduled()
        response = web.StreamResponse(headers=self._headers(generation, "text/event-stream"))
        response.headers["Cache-Control"] = "no-cache"
        params = generation.params
        encoder = StreamEncoder(
            self.shape,
            params.chat,
            generation.response_id,
            generation.created,
            self.model_name,
            params.return_token_ids,
            params.include_usage,
        )
        try:
            await response.prepare(request)
            await generation.write_stream(response, encoder)
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError is one
            _log.debug("client went away mid-stream: %s aborted", generation.response_id)
        except asyncio.CancelledError:  # aiohttp cancels the handler of a closed connection
            _log.debug("client went away mid-stream: %s aborted", generation.response_id)
            raise
        return response

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
    options = ServeOptions(
        engine_args=args,
        host=host,
        port=port,
        stream_interval=stream_interval,
        tokenizer_dir=tokenizer_dir,
    )
    options, tokenizer = with_tokenizer(options)
    if engine is None:
        from kvbench.emulator.engine.build import build_engine

        engine = build_engine(options.engine_args)
    return await start_server(EngineServer(engine, options, tokenizer=tokenizer), host, port)
