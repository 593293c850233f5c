"""A scenario's stack in one process: N emulated engines (with the scenario's KV connector) and the
emulated router in front, configured exactly as the emulated target configures its processes.

Each engine's `vllm serve` flags and environment are rendered from the scenario catalog and parsed
by the same flag parser `kvbench emulate serve` uses, then built by the same `build_engine`; the
router reads the scenario's EndpointPickerConfig YAML. What differs from the live stack is only
what time is: LMCache remote round trips on the real Redis / Valkey server cost a modelled
`remote_round_trip_s` of virtual time, and the NONE_HASH seed comes from the cell's seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from kvbench.emulator.api.args import parse_serve_args
from kvbench.emulator.api.kv_events import KVEventsConfig
from kvbench.emulator.api.metrics import ServerMetrics
from kvbench.emulator.api.server import _cache_info, resolve_max_model_len, with_tokenizer
from kvbench.emulator.api.tokenizer import Tokenizer
from kvbench.emulator.engine.build import build_engine
from kvbench.emulator.engine.interface import EngineArgs, KVEvent
from kvbench.emulator.router.config import load_config_text
from kvbench.emulator.router.events import parse_topic
from kvbench.emulator.stack import EngineSettings
from kvbench.simulate.engine_node import SimEngine
from kvbench.simulate.events import EventLoop
from kvbench.simulate.hash_memo import HASH_MEMO
from kvbench.simulate.router_node import RouterTiming, SimRouter
from kvbench.spec.scenarios import RenderedScenario, Runtime, ScenarioCatalog, render_scenario

DEFAULT_REMOTE_ROUND_TRIP_S = 0.0003  # one pipelined Redis / Valkey round trip on loopback
ENGINE_PORT = 8000


class ModelledRoundTrips:
    """A `RemoteKVStore` timer that advances by one round trip per read. The store reads its timer
    exactly twice per operation (start, end), so every operation costs `round_trip_s`."""

    def __init__(self, round_trip_s: float) -> None:
        self.round_trip_s = round_trip_s
        self._reads = 0

    def __call__(self) -> float:
        self._reads += 1
        return self._reads * self.round_trip_s


@dataclass
class SimStack:
    engines: list[SimEngine]
    router: SimRouter
    served_model_name: str
    engine_args: list[EngineArgs]
    rendered: RenderedScenario  # engine 0's rendering
    max_model_len: int
    tokenizer: Tokenizer  # what every engine's server tokenizes text and chat messages with
    store_url: str | None = None  # the real Redis / Valkey server the scenario uses, if any

    @property
    def prompt_tokens_details(self) -> bool:
        return self.engine_args[0].enable_prompt_tokens_details

    def close(self) -> None:
        self.router.close()
        for engine in self.engines:
            connector = engine.engine.connector
            remote = getattr(connector, "remote", None)
            if remote is not None:
                remote.close()


def engine_address(index: int) -> str:
    return f"sim-engine-{index}:{ENGINE_PORT}"


def _runtime(settings: EngineSettings, address: str, store_url: str | None) -> Runtime:
    return Runtime(
        model=settings.model,
        served_model_name=settings.served_model_name,
        block_size=settings.routing_block_size,
        pod_address=address,
        kv_store_url=store_url,
        kv_store_address=store_url,
        kv_events_endpoint="inproc://kv-events",
        kv_events_bind="inproc://kv-events",
    )


def _engine_args(
    settings: EngineSettings, hardware: str, rendered: RenderedScenario
) -> tuple[EngineArgs, Tokenizer]:
    """The engine's args and its server's tokenizer, as `kvbench emulate serve` derives them."""
    argv = [
        settings.model,
        "--hardware",
        hardware,
        *settings.flags(ENGINE_PORT),
        *rendered.engine_args,
        *settings.extra_args,
    ]
    options, tokenizer = with_tokenizer(parse_serve_args(argv, rendered.engine_env))
    return options.engine_args, tokenizer


def build_stack(
    loop: EventLoop,
    catalog: ScenarioCatalog,
    scenario: str,
    params: dict[str, Any],
    settings: EngineSettings,
    hardware: str,
    store_url: str | None,
    seed: int,
    router_timing: RouterTiming = RouterTiming(),
    remote_round_trip_s: float = DEFAULT_REMOTE_ROUND_TRIP_S,
) -> SimStack:
    """Raises UserError for a configuration the engine or router rejects (flag named)."""
    rng = random.Random(seed)
    engines: list[SimEngine] = []
    all_args: list[EngineArgs] = []
    rendered_all: list[RenderedScenario] = []
    for index in range(settings.engines):
        address = engine_address(index)
        rendered = render_scenario(
            catalog, scenario, params, _runtime(settings, address, store_url)
        )
        args, tokenizer = _engine_args(settings, hardware, rendered)
        engine = build_engine(
            args,
            urandom=rng.randbytes,
            remote_timer=ModelledRoundTrips(remote_round_trip_s),
            hash_memo=HASH_MEMO,
        )
        model_name = args.served_model_name or args.model
        max_model_len = resolve_max_model_len(engine, args)
        metrics = ServerMetrics(
            engine.stats, model_name, "0", max_model_len, _cache_info(args, engine, max_model_len)
        )
        engines.append(SimEngine(loop, engine, metrics, address))
        all_args.append(args)
        rendered_all.append(rendered)
    config = load_config_text(rendered_all[0].epp_config_yaml(), f"scenario {scenario} EPP config")
    router = SimRouter(loop, config, engines, seed, router_timing)
    for node, args in zip(engines, all_args):
        _wire_kv_events(node, args, router)
    return SimStack(
        engines,
        router,
        settings.served_model_name,
        all_args,
        rendered_all[0],
        engines[0].engine.max_model_len,
        tokenizer,
        store_url,
    )


def _wire_kv_events(engine: SimEngine, args: EngineArgs, router: SimRouter) -> None:
    config = KVEventsConfig.from_json(args.kv_events_config)
    if not config.active or not router.has_index:
        return
    pod, model = parse_topic(config.topic)

    def publish(planned_s: float, events: list[KVEvent]) -> None:
        router.deliver_kv_events(pod, model, planned_s, events)

    engine.on_kv_events = publish
