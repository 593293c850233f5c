"""What a target tells the runner about a deployment it brought up, and about a cache reset.

These are the typed seams between a target (targets/) and the runner (experiment/); both are
written verbatim into cell.json (results/cell.py), so they live here, below both.

Contract for a target:
- `up()` returns a `Deployment` (targets/base.py) whose `facts` is a `DeploymentFacts`. Fill what
  the target knows and leave the rest None: None means "not known", never "zero". Capacities are
  in tokens and are totals over all engines (the `_per_engine` lists give the split).
  The runner reads `gpu_kv_capacity_tokens` / `cpu_kv_capacity_tokens` for capacity-aware workload
  sizing and `max_model_len` for its length check; the report reads the rest.
- `reset_caches()` returns a `ResetResult`: one `ComponentReset` per component it tried (engines as
  `engine-<i>`, the store by its kind, `router`). A cell starts "cold" only when every component
  that holds KV (all but ROUTING_ONLY_COMPONENTS) reset. A target whose metrics endpoints changed
  during the reset (a restarted pod has a new name) returns them in `metrics_sources`; the runner
  applies them to the deployment, the target does not mutate it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

# Components whose state steers routing but holds no KV: a router's prefix index that could not be
# reset (llm-d's approximate index has no reset API) does not make the engines' caches warm.
ROUTING_ONLY_COMPONENTS = ("router",)

KvTier = Literal["gpu", "cpu", "remote"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KvStoreFacts(_Strict):
    """The Redis / Valkey server a scenario uses (an LMCache remote tier or an llm-d KV-block index)."""

    kind: str  # redis | valkey
    role: str | None = None  # lmcache-remote | kv-block-index
    url: str | None = None  # where it listens (local targets)
    maxmemory_bytes: int | None = None  # the eviction bound it runs with, when kvbench set one
    deployment: str | None = None  # the Kubernetes Deployment that runs it (k8s target)


class K8sApplyFacts(_Strict):
    """What the k8s target applied for this deployment."""

    namespace: str
    applied: dict[str, str] = Field(
        default_factory=dict
    )  # "Kind/name" -> created|patched|unchanged
    epp_restarted: bool = False
    manifests_path: str | None = None


class DeploymentFacts(_Strict):
    """Scenario facts of one running (model, scenario); every field optional (None: not known)."""

    gpu_kv_capacity_tokens: int | None = None  # sum over engines
    gpu_kv_capacity_tokens_per_engine: list[int | None] = Field(default_factory=list)
    cpu_kv_capacity_tokens: int | None = None  # sum over engines; None without a CPU tier
    cpu_kv_capacity_tokens_per_engine: int | None = None
    remote_kv_capacity_tokens: int | None = None  # a remote store's size, shared by all engines
    kv_tiers: list[KvTier] = Field(default_factory=list)  # the tiers the scenario configures
    max_model_len: int | None = None
    gpu_block_size: int | None = None  # tokens per GPU KV block, as the engines report it
    engines: int | None = None
    tensor_parallel_size: int | None = None
    router: str | None = None  # what routes the load, e.g. "emulated llm-d EPP"; None: no router
    store: KvStoreFacts | None = None
    server_version: str | None = None  # e.g. the vLLM version the engines report
    engine_args: list[str] = Field(default_factory=list)  # the flags the engines were started with
    engine_env: dict[str, str] = Field(default_factory=dict)  # the scenario's environment
    epp_config_path: str | None = None  # the router's EndpointPickerConfig file
    decision_log_path: str | None = None  # the router's per-request decision log
    logs_path: str | None = None  # where the servers' logs are
    k8s: K8sApplyFacts | None = None
    notes: list[str] = Field(default_factory=list)


class ComponentReset(_Strict):
    """One component's reset: did it happen, how, and why not."""

    reset: bool
    what: str = ""  # e.g. "POST /reset_prefix_cache", "FLUSHALL (kv-block-index)"
    attempts: int | None = None
    http_status: int | None = None
    error: str | None = None
    note: str | None = None
    keys_removed: int | None = None  # a flushed store's key count before the flush
    pod: str | None = None  # the pod reset (k8s target)
    # vllm target: how the engine got cold: "gpu" (POST /reset_prefix_cache), "external" (with
    # reset_external=true: the connector's CPU tier too), "restart" (the tier has no reset) or
    # "fresh-start" (no reset needed: the engine has served no prompt since it started).
    method: str | None = None
    restart_s: float | None = None  # how long the engine restart took


class ResetResult(_Strict):
    components: dict[str, ComponentReset] = Field(default_factory=dict)
    # New metrics endpoints after the reset (None: unchanged); the runner applies them. Not
    # validated (a k8s source is a str subclass carrying credentials) and never written to disk.
    metrics_sources: SkipValidation[dict[str, str] | None] = Field(default=None, exclude=True)

    def kv_holders_reset(self) -> bool:
        """True when at least one component holds KV and every such component reset."""
        holders = [
            entry for name, entry in self.components.items() if name not in ROUTING_ONLY_COMPONENTS
        ]
        return bool(holders) and all(entry.reset for entry in holders)
