"""LMCache 0.3.9 configuration as LMCacheConnectorV1 reads it, validated.

Precedence (vllm_v1_adapter.py): the YAML file named by LMCACHE_CONFIG_FILE, otherwise the
`LMCACHE_<KEY>` environment variables; then `lmcache.<key>` entries of kv_connector_extra_config
override either. Keys that change behaviour the emulator does not model (disk tier, blending,
layerwise, other cache policies or hash algorithms, other remote schemes) are refused with a
UserError naming the key; keys with no effect here are accepted and ignored.

kvbench's own knobs (not LMCache's) live under `kvbench.<key>` in kv_connector_extra_config:
remote_payload_scale, remote_network_bytes_per_s, remote_timeout_ms, remote_retry_interval_s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from kvbench.errors import UserError

# Keys LMCache 0.3.9 knows that have no effect on what the emulator models.
_IGNORED_KEYS = {
    "remote_serde",
    "blend_recompute_ratios",
    "blend_thresholds",
    "blend_check_layers",
    "blend_min_tokens",
    "blend_special_str",
    "enable_p2p",
    "lookup_url",
    "distributed_url",
    "enable_controller",
    "lmcache_instance_id",
    "controller_url",
    "lmcache_worker_port",
    "error_handling",
    "enable_async_loading",
    "lookup_timeout_ms",
    "internal_api_server_enabled",
    "internal_api_server_port_start",
    "extra_config",
    "priority_limit",
    "min_retrieve_tokens",
    "numa_mode",
    "cufile_buffer_size",
    "gds_path",
    "py_enable_gc",
    "log_level",
    "enable_pd",
    "enable_lazy_memory_allocator",
    "external_lookup_client",
    "save_only_first_rank",
    "nixl_role",
    "nixl_receiver_host",
    "nixl_receiver_port",
    "nixl_buffer_size",
    "nixl_buffer_device",
    "pd_role",
    "pd_buffer_size",
    "pd_buffer_device",
    "pd_peer_host",
    "pd_peer_init_port",
    "pd_peer_alloc_port",
    "pd_proxy_host",
    "pd_proxy_port",
    "transfer_channel",
    "audit_actual_remove",
    "remote_storage_plugins",
    "storage_plugins",
    "lmcache_use_experimental",
    "use_experimental",
}
_REFUSED_IF_SET = {  # key -> value that is fine (the default)
    "local_disk": None,
    "max_local_disk_size": 0.0,
    "enable_blending": False,
    "use_layerwise": False,
}
DEFAULT_REMOTE_PAYLOAD_SCALE = 1 / 4096  # fraction of the true chunk bytes written to the store
_KVBENCH_DEFAULTS = {
    "remote_payload_scale": DEFAULT_REMOTE_PAYLOAD_SCALE,
    "remote_network_bytes_per_s": 12.5e9,  # 100 Gb/s to the store
    "remote_timeout_ms": 50.0,
    "remote_retry_interval_s": 1.0,
}


@dataclass(frozen=True, slots=True)
class LMCacheConfig:
    chunk_size: int = 256
    local_cpu: bool = True
    max_local_cpu_size: float = 5.0  # GiB per worker (TP rank)
    remote_url: str | None = None
    save_decode_cache: bool = False
    save_unfull_chunk: bool = True
    cache_policy: str = "LRU"
    pre_caching_hash_algorithm: str = "builtin"
    remote_payload_scale: float = _KVBENCH_DEFAULTS["remote_payload_scale"]
    remote_network_bytes_per_s: float = _KVBENCH_DEFAULTS["remote_network_bytes_per_s"]
    remote_timeout_ms: float = _KVBENCH_DEFAULTS["remote_timeout_ms"]
    remote_retry_interval_s: float = _KVBENCH_DEFAULTS["remote_retry_interval_s"]

    @property
    def max_local_cpu_bytes(self) -> int:
        return int(self.max_local_cpu_size * 1024**3) if self.local_cpu else 0

    @property
    def remote_scheme(self) -> str | None:
        return urlparse(self.remote_url).scheme if self.remote_url else None


_TYPES = {f.name: f.type for f in fields(LMCacheConfig)}


def _coerce(key: str, value: Any, source: str) -> object:
    kind = _TYPES[key]
    try:
        if value is None and "None" in kind:
            return None
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{source}: {value!r} is not a valid {kind}") from None


def _merge(raw: dict, source_of: Callable[[str], str], into: dict) -> None:
    for key, value in raw.items():
        source = source_of(key)
        if key in _TYPES and key not in _KVBENCH_DEFAULTS:
            into[key] = _coerce(key, value, source)
        elif key in _REFUSED_IF_SET:
            if value not in (
                _REFUSED_IF_SET[key],
                str(_REFUSED_IF_SET[key]),
                None,
                "",
                "False",
                "false",
            ):
                raise UserError(
                    f"{source}: {value!r} is not emulated by kvbench (only {_REFUSED_IF_SET[key]!r})"
                )
        elif key not in _IGNORED_KEYS:
            raise UserError(f"{source}: unknown LMCache config key {key!r}")


def _from_file(path_text: str) -> dict:
    path = Path(path_text)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"LMCACHE_CONFIG_FILE: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(
            f"LMCACHE_CONFIG_FILE: {path} is not valid YAML ({exc.__class__.__name__})"
        ) from None
    if not isinstance(loaded, dict):
        raise UserError(f"LMCACHE_CONFIG_FILE: {path} must hold a mapping of LMCache keys")
    return loaded


def load_lmcache_config(env: dict[str, str], extra: dict) -> LMCacheConfig:
    values: dict = {}
    if env.get("LMCACHE_CONFIG_FILE"):
        path = env["LMCACHE_CONFIG_FILE"]
        _merge(_from_file(path), lambda key: f"LMCACHE_CONFIG_FILE {path}: {key}", values)
    else:
        from_env = {
            name[len("LMCACHE_") :].lower(): value
            for name, value in env.items()
            if name.startswith("LMCACHE_")
            and name[len("LMCACHE_") :].lower() in (_TYPES.keys() | _REFUSED_IF_SET.keys())
        }
        _merge(from_env, lambda key: f"LMCACHE_{key.upper()}", values)
    overrides = {k[len("lmcache.") :]: v for k, v in extra.items() if k.startswith("lmcache.")}
    _merge(overrides, lambda key: f"kv_connector_extra_config.lmcache.{key}", values)
    for key, _default in _KVBENCH_DEFAULTS.items():
        if f"kvbench.{key}" in extra:
            values[key] = _coerce(
                key, extra[f"kvbench.{key}"], f"kv_connector_extra_config.kvbench.{key}"
            )
    config = LMCacheConfig(**values)
    _validate(config)
    return config


def _validate(config: LMCacheConfig) -> None:
    if config.chunk_size <= 0:
        raise UserError(f"LMCache chunk_size: must be positive, got {config.chunk_size}")
    if config.max_local_cpu_size < 0:
        raise UserError(
            f"LMCache max_local_cpu_size: must be >= 0 GB, got {config.max_local_cpu_size}"
        )
    if config.cache_policy.upper() != "LRU":
        raise UserError(
            f"LMCache cache_policy: only 'LRU' is emulated, got {config.cache_policy!r}"
        )
    if config.pre_caching_hash_algorithm != "builtin":
        raise UserError(
            f"LMCache pre_caching_hash_algorithm: only 'builtin' is emulated, got {config.pre_caching_hash_algorithm!r}"
        )
    if config.remote_url is not None:
        parsed = urlparse(config.remote_url)
        if parsed.scheme not in ("redis", "valkey") or not parsed.hostname or not parsed.port:
            raise UserError(
                f"LMCache remote_url: expected redis://host:port or valkey://host:port, got {config.remote_url!r}"
            )
    if not 0 < config.remote_payload_scale <= 1:
        raise UserError("kvbench.remote_payload_scale: must be in (0, 1]")
    if config.remote_network_bytes_per_s <= 0 or config.remote_timeout_ms <= 0:
        raise UserError("kvbench.remote_network_bytes_per_s / remote_timeout_ms: must be positive")
