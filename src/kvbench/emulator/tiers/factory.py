"""Build the KV connector named by `--kv-transfer-config` (called lazily by engine/build.py).

Accepted: {"kv_connector": "OffloadingConnector" | "LMCacheConnectorV1", "kv_role": "kv_both", ...,
"kv_connector_extra_config": {...}}. `kv_offloading_backend_config` translates vLLM 0.11.2's
`--kv-offloading-backend native|lmcache --kv-offloading-size GiB` into such a config.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from kvbench.emulator.engine.connector import ConnectorFacts, KVConnector
from kvbench.emulator.engine.interface import EngineArgs
from kvbench.emulator.tiers.lmcache import LMCacheConnector
from kvbench.emulator.tiers.lmcache_config import load_lmcache_config
from kvbench.emulator.tiers.lmcache_keys import none_hash, parse_python_hash_seed
from kvbench.emulator.tiers.native import OffloadingConnector
from kvbench.emulator.tiers.native_config import parse_offload_config
from kvbench.emulator.tiers.remote_store import RemoteKVStore
from kvbench.errors import UserError
from kvbench.spec.catalogs import get_model

CONNECTORS = ("OffloadingConnector", "LMCacheConnectorV1")
KV_ROLES = ("kv_both", "kv_producer", "kv_consumer")


def build_connector(
    args: EngineArgs,
    facts: ConnectorFacts,
    urandom: Callable[[int], bytes] = os.urandom,
    timer: Callable[[], float] = time.perf_counter,
) -> KVConnector:
    config = args.kv_transfer_config or {}
    name = config.get("kv_connector")
    if name not in CONNECTORS:
        raise UserError(
            f"--kv-transfer-config kv_connector: expected one of {CONNECTORS}, got {name!r}"
        )
    if config.get("kv_role") not in KV_ROLES:
        raise UserError(
            f"--kv-transfer-config kv_role: expected one of {KV_ROLES}, got {config.get('kv_role')!r}"
        )
    extra = config.get("kv_connector_extra_config") or {}
    if not isinstance(extra, dict):
        raise UserError("--kv-transfer-config kv_connector_extra_config: must be a JSON object")
    if name == "OffloadingConnector":
        return OffloadingConnector(parse_offload_config(extra, facts), facts)
    return _build_lmcache(args, facts, extra, urandom, timer)


def _build_lmcache(args, facts, extra, urandom, timer) -> LMCacheConnector:
    lm_config = load_lmcache_config(args.env, extra)
    init_hash = none_hash(parse_python_hash_seed(args.env), urandom)
    remote = None
    if lm_config.remote_url:
        remote = RemoteKVStore(
            lm_config.remote_url,
            lm_config.remote_timeout_ms / 1000,
            lm_config.remote_retry_interval_s,
            timer,
        )
    return LMCacheConnector(lm_config, facts, init_hash, remote, num_layers=_num_layers(args.model))


def _num_layers(model: str) -> int:
    try:
        return get_model(model).num_layers
    except (KeyError, UserError):
        return 1


def kv_offloading_backend_config(backend: str, size_gib: float, tensor_parallel_size: int) -> dict:
    """vLLM 0.11.2 `--kv-offloading-backend/--kv-offloading-size` as a --kv-transfer-config dict.

    lmcache: LMCacheConnectorV1 with lmcache.local_cpu and max_local_cpu_size = size / ranks.
    native: 0.11.2 sets num_cpu_blocks 0, which its own CPUOffloadingSpec rejects; kvbench uses
    the 0.14 meaning instead (cpu_bytes_to_use = size, a total over ranks) and says so here.
    """
    if size_gib <= 0:
        raise UserError(f"--kv-offloading-size: must be positive GiB, got {size_gib}")
    if backend == "lmcache":
        return {
            "kv_connector": "LMCacheConnectorV1",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {
                "lmcache.local_cpu": True,
                "lmcache.max_local_cpu_size": size_gib / tensor_parallel_size,
            },
        }
    if backend == "native":
        return {
            "kv_connector": "OffloadingConnector",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {"cpu_bytes_to_use": int(size_gib * 1024**3)},
        }
    raise UserError(f"--kv-offloading-backend: expected native or lmcache, got {backend!r}")
