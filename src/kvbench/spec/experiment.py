"""The experiment spec: what to run, against what, under which load.

An experiment expands into cells: model x scenario x load level x repeat. Every model here rejects
unknown keys (`extra="forbid"`), so a typo in a spec is an error naming the field, never a silently
ignored setting. `load_spec` turns any problem into a one-line `UserError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kvbench.errors import UserError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# ----------------------------------------------------------------------------- distributions


class Distribution(StrictModel):
    """A token-length distribution; `fixed` uses `mean` only. Samples are clipped to [min, max]."""

    kind: Literal["fixed", "uniform", "normal", "lognormal"] = "fixed"
    mean: float = Field(gt=0)
    stdev: float = Field(default=0.0, ge=0)
    min: int | None = Field(default=None, ge=1)
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Distribution:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


TokenCount = Annotated[int, Field(gt=0)] | Distribution


# ----------------------------------------------------------------------------- workloads


class WorkingSetTarget(StrictModel):
    """Size the workload so its working set is `factor` x a KV capacity of the target."""

    capacity: Literal["gpu", "cpu"] = "gpu"
    factor: float = Field(gt=0)


class MultiTurnSharedPrefix(StrictModel):
    """The seed report's workload: conversations over a shared prefix, each turn resending history."""

    kind: Literal["multi_turn_shared_prefix"]
    prefix_tokens: int = Field(ge=0)
    prefix_count: int = Field(gt=0)
    turns: int = Field(gt=0)
    prompt_tokens: TokenCount
    output_tokens: TokenCount
    conversations: int = Field(
        gt=0, description="conversations generated (GuideLLM's samples / turns)"
    )
    reuse_order: Literal["random", "round_robin", "grouped"] = "random"
    think_time_s: float = Field(default=0.0, ge=0)
    working_set: WorkingSetTarget | None = None


class Synthetic(StrictModel):
    """Independent requests of fixed or distributed lengths (the vLLM offload report: 256 in / 128 out)."""

    kind: Literal["synthetic"]
    prompt_tokens: TokenCount
    output_tokens: TokenCount
    requests: int = Field(gt=0)
    shared_prefix_tokens: int = Field(default=0, ge=0)


class SharedPrefixGroups(StrictModel):
    """The tiered-prefix-cache guide's workload (inference-perf `shared_prefix`)."""

    kind: Literal["shared_prefix_groups"]
    num_groups: int = Field(gt=0)
    system_prompt_len: int = Field(ge=0)
    question_len: int = Field(gt=0)
    output_len: int = Field(gt=0)
    num_prompts_per_group: int = Field(gt=0)
    reuse_order: Literal["random", "round_robin", "grouped"] = "random"
    working_set: WorkingSetTarget | None = None


class Replay(StrictModel):
    """Conversations from a JSONL file (token ids or text)."""

    kind: Literal["replay"]
    path: Path
    output_tokens: TokenCount | None = None  # when the file gives none


WorkloadSpec = Annotated[
    MultiTurnSharedPrefix | Synthetic | SharedPrefixGroups | Replay, Field(discriminator="kind")
]


# ----------------------------------------------------------------------------- load


class LoadSpec(StrictModel):
    """How requests are offered. `levels` are concurrencies (concurrent) or rates in req/s."""

    strategy: Literal["concurrent", "constant", "poisson", "sweep", "synchronous"] = "concurrent"
    levels: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [1.0])
    duration_s: float | None = Field(default=None, gt=0)
    requests_per_level: int | None = Field(default=None, gt=0)
    warmup_s: float = Field(default=0.0, ge=0)
    cooldown_s: float = Field(default=0.0, ge=0)
    request_timeout_s: float = Field(default=600.0, gt=0)
    sweep_size: int = Field(
        default=10, ge=3, description="sweep: levels incl. synchronous and throughput"
    )
    max_concurrency: int | None = Field(default=None, gt=0, description="cap for rate strategies")
    api: Literal["completions", "chat"] = "completions"
    stream: bool = True

    @model_validator(mode="after")
    def _needs_a_stop(self) -> LoadSpec:
        if self.duration_s is None and self.requests_per_level is None:
            raise ValueError("set duration_s or requests_per_level")
        if self.strategy == "concurrent" and any(
            not float(level).is_integer() for level in self.levels
        ):
            raise ValueError("concurrent levels are numbers of streams: whole numbers only")
        return self


# ----------------------------------------------------------------------------- targets


class EndpointTarget(StrictModel):
    """An OpenAI-compatible server that is already running."""

    kind: Literal["endpoint"]
    url: str
    metrics_urls: list[str] = Field(default_factory=list)
    model_name: str | None = None  # served model name; default: the first of /v1/models


class EmulatedTarget(StrictModel):
    """A local stack of emulated vLLM engines (+ router and KV stores as the scenario needs)."""

    kind: Literal["emulated"]
    hardware: str = "H100-SXM"
    engines: int = Field(default=1, gt=0)
    tensor_parallel_size: int = Field(default=1, gt=0)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    num_gpu_blocks_override: int | None = Field(default=None, gt=0)
    max_num_seqs: int = Field(default=256, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    max_model_len: int | None = Field(default=None, gt=0)
    block_size: int = Field(default=16, gt=0)
    extra_args: list[str] = Field(default_factory=list)


class VllmTarget(StrictModel):
    """Real `vllm serve` processes on this host."""

    kind: Literal["vllm"]
    vllm_command: list[str] = Field(default_factory=lambda: ["vllm", "serve"])
    model_path: str | None = None  # local model folder; default: the model name
    engines: int = Field(default=1, gt=0)
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    startup_timeout_s: float = Field(default=300.0, gt=0)


class K8sTarget(StrictModel):
    """An llm-d deployment on Kubernetes, configured through the Kubernetes API."""

    kind: Literal["k8s"]
    namespace: str = "llm-d-pfc-cpu"
    kubeconfig: str | None = None
    gateway_url: str | None = None
    dry_run: bool = False
    model_server_deployment: str = "llm-d-model-server"
    epp_configmap: str = "llm-d-infpool-epp"
    epp_deployment: str = "llm-d-infpool-epp"
    rollout_timeout_s: float = Field(default=900.0, gt=0)
    engines: int = Field(default=1, gt=0, description="model-server replicas")
    tensor_parallel_size: int = Field(default=1, gt=0)
    max_num_seqs: int = Field(default=1024, gt=0)
    block_size: int = Field(default=16, gt=0)
    image: str = "ghcr.io/llm-d/llm-d-cuda:v0.4.0"  # used when kvbench creates the model server
    extra_args: list[str] = Field(default_factory=list)
    epp_config_key: str = (
        "default-plugins.yaml"  # the EPP ConfigMap's data key (GIE pluginsConfigFile)
    )
    restart_epp_on_reset: bool = Field(
        default=False,
        description="reset_caches also restarts the EPP (its approximate prefix index has no reset API)",
    )


TargetSpec = Annotated[
    EndpointTarget | EmulatedTarget | VllmTarget | K8sTarget, Field(discriminator="kind")
]


# ----------------------------------------------------------------------------- the experiment


class CacheProtocol(StrictModel):
    """Per-cell cache-state protocol: reset -> prime -> verify -> measure."""

    reset: bool = True
    prime: bool = False
    verify: bool = True


class CollectSpec(StrictModel):
    interval_s: float = Field(default=1.0, gt=0)
    server_metrics: bool = True
    system_metrics: bool = True


class ExperimentSpec(StrictModel):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    models: list[str] = Field(min_length=1)
    scenarios: list[str] = Field(default_factory=lambda: ["no-offload"], min_length=1)
    scenario_files: list[Path] = Field(
        default_factory=list,
        description="extra scenario YAML files (spec/scenarios.py format), relative to the spec",
    )
    scenario_params: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="knobs swept across scenarios, e.g. num_cpu_blocks: [10000, 20000]",
    )
    target: TargetSpec
    workload: WorkloadSpec
    load: LoadSpec
    repeats: int = Field(default=1, gt=0)
    cache: CacheProtocol = Field(default_factory=CacheProtocol)
    collect: CollectSpec = Field(default_factory=CollectSpec)
    output_dir: Path | None = None


# ----------------------------------------------------------------------------- loading


def format_validation_error(source: str, err: ValidationError) -> str:
    """One line: `<source>: <field.path>: <problem>` for the first error (and a count of the rest)."""
    errors = err.errors()
    # A value given as a mapping where `int | Distribution` is allowed fails both branches; the int
    # branch's "should be a valid integer" is noise next to the Distribution branch's real problem.
    meaningful = [e for e in errors if e["type"] not in _UNION_BRANCH_NOISE] or errors
    first = meaningful[0]
    path = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part))
    more = len(meaningful) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {path or '<top>'}: {first['msg']}{suffix}"


_UNION_BRANCH_NOISE = {"int_type", "int_parsing", "model_type"}


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the discriminator value (e.g. "synthetic") into the location of union errors.
    return (
        isinstance(part, str)
        and part
        in {
            "multi_turn_shared_prefix",
            "synthetic",
            "shared_prefix_groups",
            "replay",
            "endpoint",
            "emulated",
            "vllm",
            "k8s",
            "int",
            "Distribution",
        }
        or (isinstance(part, str) and part.startswith(("function-", "constrained-")))
    )


def parse_spec(data: Any, source: str = "spec") -> ExperimentSpec:
    if not isinstance(data, dict):
        raise UserError(f"{source}: the spec must be a YAML mapping, got {type(data).__name__}")
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(source, err)) from None


def load_spec(path: str | Path) -> ExperimentSpec:
    spec_path = Path(path)
    if not spec_path.is_file():
        raise UserError(f"{spec_path}: no such spec file")
    try:
        data = yaml.safe_load(spec_path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{spec_path}: invalid YAML{where}: {problem}") from None
    spec = parse_spec(data, str(spec_path))
    # Relative scenario files are relative to the spec file (absolute in the manifest snapshot).
    spec.scenario_files = [
        p if p.is_absolute() else (spec_path.parent / p).resolve() for p in spec.scenario_files
    ]
    return spec
