"""What the emulated and vllm targets share: a scenario's stack on this host (emulator/stack.py),
its capacities, cache resets and teardown.

How these targets fill DeploymentFacts (results/deployment.py):
- gpu_kv_capacity_tokens: sum over engines of num_gpu_blocks x block_size from each engine's
  /metrics `vllm:cache_config_info`; gpu_kv_capacity_tokens_per_engine alongside;
- cpu_kv_capacity_tokens: sum over engines of the CPU tier the scenario configures
  (OffloadingConnector num_cpu_blocks x offload block, or cpu_bytes_to_use / KV bytes per token;
  LMCache LMCACHE_MAX_LOCAL_CPU_SIZE GiB per TP rank / KV bytes per token per rank); None without one;
- remote_kv_capacity_tokens: an LMCache remote store's size in tokens (shared by all engines);
- max_model_len (GET /v1/models), engines, tensor_parallel_size, store, engine_args, engine_env,
  epp_config_path, decision_log_path, logs_path.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kvbench.emulator.processes import StartError
from kvbench.emulator.stack import EngineLauncher, RunningStack, settings_from_spec, start_stack
from kvbench.emulator.stores import KVStoreServer
from kvbench.errors import UserError
from kvbench.spec.scenarios import (
    RenderedScenario,
    ScenarioCatalog,
    engine_overrides,
    load_catalog,
    store_maxmemory_bytes,
)
from kvbench.targets.base import (
    ComponentReset,
    Deployment,
    DeploymentFacts,
    KvStoreFacts,
    KvTier,
    ResetResult,
    TargetError,
)

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


def _cache_config_int(metrics_text: str, label: str) -> int | None:
    match = _INFO_LINE.search(metrics_text)
    if not match:
        return None
    labels = dict(_LABEL.findall(match.group("labels")))
    try:
        return int(labels[label])
    except (KeyError, ValueError):
        return None


def gpu_capacity_tokens(metrics_text: str) -> int | None:
    blocks = _cache_config_int(metrics_text, "num_gpu_blocks")
    block_size = gpu_block_size(metrics_text)
    return blocks * block_size if blocks is not None and block_size is not None else None


def gpu_block_size(metrics_text: str) -> int | None:
    """The engine's GPU block size as it reports it (`vllm:cache_config_info{block_size}`): what
    holds when the target left the block size to the platform."""
    return _cache_config_int(metrics_text, "block_size")


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
        offload_block = int(extra.get("block_size") or block_size)
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


def kv_store_facts(rendered: RenderedScenario, store: KVStoreServer | None) -> KvStoreFacts | None:
    """The facts of the local Redis / Valkey server a scenario runs with (None: no store)."""
    if store is None:
        return None
    return KvStoreFacts(
        kind=store.kind,
        role=rendered.kv_store.role if rendered.kv_store else None,
        url=store.url,
        maxmemory_bytes=store.maxmemory_bytes,
    )


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

    def up(
        self,
        model: str,
        scenario: str,
        scenario_params: dict[str, Any],
        *,
        catalog: ScenarioCatalog | None = None,
    ) -> Deployment:
        catalog = catalog if catalog is not None else load_catalog()
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
            facts = self._facts(stack, model)
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
            facts=facts,
        )

    def router_description(self) -> str:
        return "emulated llm-d endpoint picker (kvbench emulate router)"

    def _facts(self, stack: RunningStack, model: str) -> DeploymentFacts:
        metrics_texts = [fetch_text(f"{url}/metrics")[1] for url in stack.engine_urls]
        per_engine = [gpu_capacity_tokens(text) for text in metrics_texts]
        settings, rendered = stack.settings, stack.rendered
        # None when the target left it to the platform: the engine's own report, else vLLM's 16.
        block_size = settings.block_size or gpu_block_size(metrics_texts[0]) or 16
        cpu = cpu_capacity_tokens(rendered, model, block_size, settings.tensor_parallel_size)
        remote = remote_capacity_tokens(rendered, model)
        store = stack.store
        tiers: list[KvTier] = ["gpu"]
        if cpu:
            tiers.append("cpu")
        if rendered.kv_store is not None and rendered.kv_store.role == "lmcache-remote":
            tiers.append("remote")
        return DeploymentFacts(
            gpu_kv_capacity_tokens=sum(c for c in per_engine if c is not None)
            if all(c is not None for c in per_engine)
            else None,
            gpu_kv_capacity_tokens_per_engine=per_engine,
            cpu_kv_capacity_tokens=cpu * settings.engines if cpu is not None else None,
            cpu_kv_capacity_tokens_per_engine=cpu,
            remote_kv_capacity_tokens=remote,
            kv_tiers=tiers,
            max_model_len=self._max_model_len(stack.engine_urls[0]),
            gpu_block_size=block_size,
            engines=settings.engines,
            tensor_parallel_size=settings.tensor_parallel_size,
            router=self.router_description() if stack.router_url is not None else None,
            store=kv_store_facts(rendered, store),
            engine_args=list(rendered.engine_args),
            engine_env=dict(rendered.engine_env),
            epp_config_path=rendered.epp_config_source,
            decision_log_path=str(stack.decision_log) if stack.decision_log else None,
            logs_path=str(stack.log_dir),
        )

    @staticmethod
    def _max_model_len(engine_url: str) -> int | None:
        status, body = fetch_text(f"{engine_url}/v1/models")
        try:
            return int(json.loads(body)["data"][0]["max_model_len"]) if status == 200 else None
        except (ValueError, KeyError, IndexError, TypeError):
            return None

    def reset_caches(self, deployment: Deployment) -> ResetResult:
        """Engines: POST /reset_prefix_cache (GPU prefix cache + the connector's local tiers).
        Store: FLUSHALL (LMCache remote tier, or the llm-d KV-block index, which would otherwise
        keep entries of blocks the engines just dropped). The router's approximate prefix index has
        no reset API (nor has llm-d's EPP) and is not reset."""
        result = ResetResult()
        stack = self._stacks.get(deployment.base_url)
        for index, url in enumerate(deployment.api_urls):
            result.components[f"engine-{index}"] = self.reset_engine(stack, index, url)
        if stack is not None and stack.store is not None and stack.rendered.kv_store is not None:
            result.components[stack.store.kind] = _flush_store(
                stack.store.redis_url, stack.rendered.kv_store.role
            )
        return result

    def reset_engine(self, stack: RunningStack | None, index: int, url: str) -> ComponentReset:
        """One engine's reset. The emulated engine's POST /reset_prefix_cache also empties its
        connector's tiers; the vllm target overrides this where real vLLM needs more."""
        return reset_engine_http(url)

    def down(self, deployment: Deployment) -> None:
        stack = self._stacks.get(deployment.base_url)
        if stack is not None:
            self.down_stack(stack)

    def down_stack(self, stack: RunningStack) -> None:
        stack.stop()
        self._stacks.pop(stack.base_url, None)


def _reset_succeeded(status: int, body: str) -> bool:
    """vLLM answers 200 with {"success": false} while blocks are held (running requests, in-flight
    offload transfers); older versions answer 200 with no body."""
    if status != 200:
        return False
    try:
        answer = json.loads(body) if body.strip() else {}
    except ValueError:
        return True
    return not (isinstance(answer, dict) and answer.get("success") is False)


def reset_engine_http(url: str, reset_external: bool = False) -> ComponentReset:
    """POST /reset_prefix_cache (with `?reset_external=true`: the connector's tiers too), retried
    while the engine still holds blocks."""
    import time

    path = "/reset_prefix_cache" + ("?reset_external=true" if reset_external else "")
    what = f"POST {path}"
    status, body = 0, ""
    for attempt in range(RESET_RETRIES):
        status, body = fetch_text(f"{url}{path}", method="POST")
        if _reset_succeeded(status, body):
            return ComponentReset(reset=True, what=what, attempts=attempt + 1)
        time.sleep(0.25)
    return ComponentReset(
        reset=False, what=what, attempts=RESET_RETRIES, http_status=status, error=body[-300:]
    )


def _flush_store(redis_url: str, role: str) -> ComponentReset:
    import redis

    what = f"FLUSHALL ({role})"
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        keys_before = int(client.dbsize())
        client.flushall()
        client.close()
    except redis.RedisError as err:
        return ComponentReset(reset=False, what=what, error=str(err))
    return ComponentReset(reset=True, what=what, keys_removed=keys_before)
