"""EppConfig -> live plugins: scorers with weights, the picker, KV-block indexes and subscribers.

Parameter semantics follow llm-d v0.4 (see prefix_approx.py and precise.py). Errors name the plugin
and the parameter path.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvbench.emulator.router.config import EppConfig, PluginSpec
from kvbench.emulator.router.index_memory import InMemoryIndex, KVBlockIndex
from kvbench.emulator.router.index_redis import RedisIndex
from kvbench.emulator.router.metrics import EppMetrics
from kvbench.emulator.router.picker import MaxScorePicker
from kvbench.emulator.router.precise import PrecisePrefixCacheScorer, load_text_tokenizer
from kvbench.emulator.router.prefix_approx import ApproxPrefixCacheScorer
from kvbench.emulator.router.scheduler import Scheduler, WeightedScorer
from kvbench.emulator.router.scorers import (
    ActiveRequestScorer,
    KVCacheUtilizationScorer,
    LoadAwareScorer,
    QueueScorer,
    Scorer,
    parse_duration_s,
)
from kvbench.emulator.router.subscriber import KVEventSubscriber
from kvbench.errors import UserError


@dataclass
class BuiltPlugins:
    scheduler: Scheduler
    indexes: list[KVBlockIndex] = field(default_factory=list)
    subscribers: list[KVEventSubscriber] = field(default_factory=list)


def _param(spec: PluginSpec, path: str, expected: type | tuple, default: Any) -> Any:
    """A nested parameter by dotted path; a wrong type is a UserError naming plugin and path."""
    node: Any = spec.parameters
    for part in path.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return default
        node = node[part]
    if isinstance(node, bool) and expected in (int, float) or not isinstance(node, expected):
        raise UserError(
            f"plugin {spec.name}: parameter {path} must be {getattr(expected, '__name__', expected)}, got {node!r}"
        )
    return node


def build_plugins(
    config: EppConfig,
    metrics: EppMetrics,
    rng: random.Random,
    clock: Callable[[], float],
    replay_endpoints: dict[str, str],
    resolve_pod: Callable[[str], str],
) -> BuiltPlugins:
    profile = config.default_profile()
    built = BuiltPlugins(scheduler=None)  # type: ignore[arg-type]
    scorers: list[WeightedScorer] = []
    picker = MaxScorePicker()
    for ref in profile.plugins:
        spec = config.plugins[ref.plugin_ref]
        if spec.type == "max-score-picker":
            count = _param(spec, "maxNumOfEndpoints", int, 1)
            if count < 1:
                raise UserError(f"plugin {spec.name}: parameter maxNumOfEndpoints must be >= 1")
            picker = MaxScorePicker(name=spec.name, max_num_of_endpoints=count)
        elif spec.type == "precise-prefix-cache-scorer":
            scorers.append(
                WeightedScorer(
                    _build_precise(spec, built, clock, replay_endpoints, resolve_pod), ref.weight
                )
            )
        elif spec.type in _SIMPLE_BUILDERS:
            scorers.append(WeightedScorer(_SIMPLE_BUILDERS[spec.type](spec, clock), ref.weight))
    built.scheduler = Scheduler(scorers, picker, rng, metrics)
    return built


def _build_active(spec: PluginSpec, clock: Callable[[], float]) -> ActiveRequestScorer:
    raw = _param(spec, "requestTimeout", (str, int, float), "2m")
    try:
        timeout_s = parse_duration_s(raw)
    except ValueError:
        raise UserError(
            f"plugin {spec.name}: parameter requestTimeout {raw!r} is not a duration like 2m or 30s"
        ) from None
    return ActiveRequestScorer(spec.name, clock, timeout_s)


def _build_approx(spec: PluginSpec, clock: Callable[[], float]) -> ApproxPrefixCacheScorer:
    block_size = _param(spec, "blockSize", int, 64)
    capacity = _param(spec, "lruCapacityPerServer", int, 31250)
    max_blocks = _param(spec, "maxPrefixBlocksToMatch", int, 256)
    for name, value in (
        ("blockSize", block_size),
        ("lruCapacityPerServer", capacity),
        ("maxPrefixBlocksToMatch", max_blocks),
    ):
        if value < 1:
            raise UserError(f"plugin {spec.name}: parameter {name} must be >= 1")
    return ApproxPrefixCacheScorer(
        spec.name,
        auto_tune=_param(spec, "autoTune", bool, True),
        block_size_chars=block_size,
        max_prefix_blocks=max_blocks,
        lru_capacity_per_server=capacity,
    )


_SIMPLE_BUILDERS: dict[str, Callable[[PluginSpec, Callable[[], float]], Scorer]] = {
    "queue-scorer": lambda spec, clock: QueueScorer(spec.name),
    "kv-cache-utilization-scorer": lambda spec, clock: KVCacheUtilizationScorer(spec.name),
    "load-aware-scorer": lambda spec, clock: LoadAwareScorer(
        spec.name, _param(spec, "threshold", int, 128)
    ),
    "active-request-scorer": _build_active,
    "prefix-cache-scorer": _build_approx,
}


def build_index(spec: PluginSpec, clock: Callable[[], float]) -> KVBlockIndex:
    """kvBlockIndexConfig: the first configured backend wins (in-memory, Redis, Valkey); default in-memory."""
    base = "indexerConfig.kvBlockIndexConfig"
    if _param(spec, f"{base}.inMemoryConfig", dict, None) is not None:
        return InMemoryIndex(
            size=_param(spec, f"{base}.inMemoryConfig.size", int, 100_000_000),
            pod_cache_size=_param(spec, f"{base}.inMemoryConfig.podCacheSize", int, 10),
        )
    for backend in ("redis", "valkey"):
        if _param(spec, f"{base}.{backend}Config", dict, None) is not None:
            default_address = f"{backend}://127.0.0.1:6379"
            address = _param(spec, f"{base}.{backend}Config.address", str, default_address)
            return RedisIndex(address, backend_type=backend, clock=clock)
    return InMemoryIndex()


def _token_processor_path(spec: PluginSpec) -> str:
    """Where this config keeps the token processor: top level (llm-d-kv-cache HEAD) or inside
    indexerConfig (kv-cache-manager <= v0.4, the seeds' llm-d). The top level wins when both exist."""
    if _param(spec, "tokenProcessorConfig", dict, None) is not None:
        return "tokenProcessorConfig"
    if _param(spec, "indexerConfig.tokenProcessorConfig", dict, None) is not None:
        return "indexerConfig.tokenProcessorConfig"
    return "tokenProcessorConfig"


def _build_precise(
    spec: PluginSpec,
    built: BuiltPlugins,
    clock: Callable[[], float],
    replay_endpoints: dict[str, str],
    resolve_pod: Callable[[str], str],
) -> PrecisePrefixCacheScorer:
    token_config = _token_processor_path(spec)
    block_size = _param(spec, f"{token_config}.blockSize", int, 16)
    if block_size < 1:
        raise UserError(f"plugin {spec.name}: parameter {token_config}.blockSize must be >= 1")
    hash_seed = _param(spec, f"{token_config}.hashSeed", (str, int), "")
    index = build_index(spec, clock)
    built.indexes.append(index)
    configured_replays = _param(spec, "kvEventsConfig.replayEndpoints", dict, {})
    subscriber = KVEventSubscriber(
        index=index,
        endpoint=_param(spec, "kvEventsConfig.zmqEndpoint", str, "tcp://*:5557"),
        topic_filter=_param(spec, "kvEventsConfig.topicFilter", str, "kv@"),
        replay_endpoints={
            resolve_pod(str(k)): str(v)
            for k, v in {**configured_replays, **replay_endpoints}.items()
        },
        resolve_pod=resolve_pod,
        clock=clock,
    )
    built.subscribers.append(subscriber)
    scorer = PrecisePrefixCacheScorer(
        spec.name, index, block_size, str(hash_seed), load_text_tokenizer()
    )
    scorer.on_request_model = subscriber.note_model
    return scorer
