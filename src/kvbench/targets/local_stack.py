"""What the emulated and vllm targets share: a scenario's stack on this host (emulator/stack.py),
its capacities, cache resets and teardown.

Deployment.details (contract, read by the runner and the report):
- gpu_kv_capacity_tokens: sum over engines of num_gpu_blocks x block_size from each engine's
  /metrics `vllm:cache_config_info`; gpu_kv_capacity_tokens_per_engine alongside;
- cpu_kv_capacity_tokens: sum over engines of the CPU tier the scenario configures
  (OffloadingConnector num_cpu_blocks x offload block, or cpu_bytes_to_use / KV bytes per token;
  LMCache LMCACHE_MAX_LOCAL_CPU_SIZE GiB per TP rank / KV bytes per token per rank); None without one;
- remote_kv_capacity_tokens: an LMCache remote store's size in tokens (shared by all engines);
- max_model_len, engines, pids, kv_store, epp_config, decision_log, logs, engine_args, engine_env.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kvbench.emulator.processes import StartError, http_ok
from kvbench.emulator.stack import EngineLauncher, RunningStack, settings_from_spec, start_stack
from kvbench.errors import UserError
from kvbench.spec.scenarios import (
    RenderedScenario,
    catalog_for_run,
    engine_overrides,
    store_maxmemory_bytes,
)
from kvbench.targets.base import Deployment, TargetError

_INFO_LINE = re.compile(r"^vllm:cache_config_info\{(?P<labels>[^}]*)\}", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
RESET_RETRIES = 20  # a reset fails while requests still hold blocks: retry briefly


def fetch_text(url: str, timeout_s: float = 5.0, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as err:
        return 0, str(err)


def gpu_capacity_tokens(metrics_text: str) -> int | None:
    match = _INFO_LINE.search(metrics_text)
    if not match:
        return None
    labels = dict(_LABEL.findall(match.group("labels")))
    try:
        return int(labels["num_gpu_blocks"]) * int(labels["block_size"])
    except (KeyError, ValueError):
        return None


def _kv_bytes_per_token(model: str) -> int | None:
    from kvbench.spec.catalogs import get_model

    try:
        return get_model(model).kv_bytes_per_token
    except UserError:
        return None


def cpu_capacity_tokens(
    rendered: RenderedScenario, model: str, block_size: int, tp: int
) -> int | None:
    """One engine's CPU-tier capacity in tokens, from the scenario's own settings."""
    kv_config = rendered.kv_transfer_config or {}
    connector = kv_config.get("kv_connector")
    extra = kv_config.get("kv_connector_extra_config") or {}
    per_token = _kv_bytes_per_token(model)
    if connector == "OffloadingConnector":
        offload_block = int(extra.get("block_size", block_size))
        if extra.get("num_cpu_blocks"):
            return int(extra["num_cpu_blocks"]) * offload_block
        if extra.get("cpu_bytes_to_use") and per_token:
            return int(extra["cpu_bytes_to_use"]) // (per_token * offload_block) * offload_block
        return None
    if connector == "LMCacheConnectorV1" and per_token:
        env = rendered.engine_env
        if env.get("LMCACHE_LOCAL_CPU", "True").lower() not in ("true", "1"):
            return 0
        gib_per_rank = float(env.get("LMCACHE_MAX_LOCAL_CPU_SIZE", "5.0"))
        return int(gib_per_rank * 1024**3 // (per_token / tp))
    return None


def remote_capacity_tokens(rendered: RenderedScenario, model: str) -> int | None:
    intended = store_maxmemory_bytes(rendered)
    per_token = _kv_bytes_per_token(model)
    return intended // per_token if intended and per_token else None


class LocalStackTarget:
    """Base of the emulated and vllm targets; subclasses give the launcher and describe()."""

    startup_timeout_s = 60.0
    with_router = True

    def __init__(self, target_spec, *, run_dir: Path, seed: int = 0):
        self.spec = target_spec
        self.run_dir = Path(run_dir)
        self.seed = seed
        self._stacks: dict[str, RunningStack] = {}  # by base_url: the stacks that are up
        self._ups = 0

    def launcher(self) -> EngineLauncher:
        raise NotImplementedError

    def _log_dir(self, model: str, scenario: str) -> Path:
        self._ups += 1
        return self.run_dir / "logs" / f"{self._ups:02d}-{model.split('/')[-1]}__{scenario}"

    def up(self, model: str, scenario: str, scenario_params: dict[str, Any]) -> Deployment:
        catalog = catalog_for_run(self.run_dir)
        overrides = engine_overrides(catalog, scenario, scenario_params, model)
        settings = settings_from_spec(self.spec, model, overrides, self.seed)
        log_dir = self._log_dir(model, scenario)
        try:
            stack = start_stack(
                catalog,
                scenario,
                scenario_params,
                settings,
                log_dir,
                self.launcher(),
                with_router=self.with_router,
                startup_timeout_s=self.startup_timeout_s,
                router_seed=self.seed,
            )
        except StartError as err:
            raise TargetError(f"{scenario}: {err}", err.log_tail) from None
        self._stacks[stack.base_url] = stack
        try:
            details = self._details(stack, model)
        except BaseException:
            self.down_stack(stack)
            raise
        return Deployment(
            model=model,
            scenario=scenario,
            served_model_name=settings.served_model_name,
            base_url=stack.base_url,
            api_urls=list(stack.engine_urls),
            metrics_sources=stack.metrics_sources(),
            pids=stack.pids(),
            details=details,
        )

    def _details(self, stack: RunningStack, model: str) -> dict[str, Any]:
        per_engine = [
            gpu_capacity_tokens(fetch_text(f"{url}/metrics")[1]) for url in stack.engine_urls
        ]
        settings, rendered = stack.settings, stack.rendered
        cpu = cpu_capacity_tokens(
            rendered, model, settings.block_size, settings.tensor_parallel_size
        )
        store = stack.store
        return {
            "gpu_kv_capacity_tokens": sum(per_engine)
            if all(c is not None for c in per_engine)
            else None,
            "gpu_kv_capacity_tokens_per_engine": per_engine,
            "cpu_kv_capacity_tokens": cpu * settings.engines if cpu is not None else None,
            "cpu_kv_capacity_tokens_per_engine": cpu,
            "remote_kv_capacity_tokens": remote_capacity_tokens(rendered, model),
            "max_model_len": self._max_model_len(stack.engine_urls[0]),
            "engines": settings.engines,
            "tensor_parallel_size": settings.tensor_parallel_size,
            "pids": stack.pids(),
            "kv_store": {
                "kind": store.kind,
                "role": rendered.kv_store.role,
                "url": store.url,
                "maxmemory_bytes": store.maxmemory_bytes,
            }
            if store
            else None,
            "scenario_params": rendered.params,
            "engine_args": rendered.engine_args,
            "engine_env": rendered.engine_env,
            "epp_config": rendered.epp_config_source,
            "decision_log": str(stack.decision_log) if stack.decision_log else None,
            "logs": str(stack.log_dir),
        }

    @staticmethod
    def _max_model_len(engine_url: str) -> int | None:
        status, body = fetch_text(f"{engine_url}/v1/models")
        try:
            return int(json.loads(body)["data"][0]["max_model_len"]) if status == 200 else None
        except (ValueError, KeyError, IndexError, TypeError):
            return None

    def reset_caches(self, deployment: Deployment) -> dict[str, Any]:
        """Engines: POST /reset_prefix_cache (GPU prefix cache + the connector's local tiers).
        Store: FLUSHALL (LMCache remote tier, or the llm-d KV-block index, which would otherwise
        keep entries of blocks the engines just dropped). The router's approximate prefix index has
        no reset API (nor has llm-d's EPP) and is not reset."""
        result: dict[str, Any] = {}
        for index, url in enumerate(deployment.api_urls):
            result[f"engine-{index}"] = _reset_engine(url)
        stack = self._stacks.get(deployment.base_url)
        if stack is not None and stack.store is not None:
            result[stack.store.kind] = _flush_store(
                stack.store.redis_url, stack.rendered.kv_store.role
            )
        return result

    def down(self, deployment: Deployment) -> None:
        stack = self._stacks.get(deployment.base_url)
        if stack is not None:
            self.down_stack(stack)

    def down_stack(self, stack: RunningStack) -> None:
        stack.stop()
        self._stacks.pop(stack.base_url, None)


def _reset_engine(url: str) -> dict[str, Any]:
    import time

    status, body = 0, ""
    for attempt in range(RESET_RETRIES):
        status, body = fetch_text(f"{url}/reset_prefix_cache", method="POST")
        if status == 200:
            return {"reset": True, "what": "POST /reset_prefix_cache", "attempts": attempt + 1}
        time.sleep(0.25)
    return {
        "reset": False,
        "what": "POST /reset_prefix_cache",
        "http_status": status,
        "error": body[-300:],
    }


def _flush_store(redis_url: str, role: str) -> dict[str, Any]:
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        keys_before = client.dbsize()
        client.flushall()
        client.close()
    except redis.RedisError as err:
        return {"reset": False, "what": f"FLUSHALL ({role})", "error": str(err)}
    return {"reset": True, "what": f"FLUSHALL ({role})", "keys_removed": keys_before}


def health_ok(url: str) -> bool:
    return http_ok(f"{url}/health")
