"""The experiment spec: what to run, against what, under which load.

An experiment expands into cells: model x scenario x load level x repeat. Every model here rejects
unknown keys (`extra="forbid"`), so a typo in a spec is an error naming the field, never a silently
ignored setting. `load_spec` turns any problem into a one-line `UserError`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kvbench.errors import UserError
from kvbench.spec import bounds as B


class StrictModel(BaseModel):
    # allow_inf_nan=False: `.inf` / `.nan` are never a valid count, duration or rate.
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)


# ----------------------------------------------------------------------------- distributions


class Distribution(StrictModel):
    """A token-length distribution; `fixed` uses `mean` only. Samples are clipped to [min, max]."""

    kind: Literal["fixed", "uniform", "normal", "lognormal"] = "fixed"
    mean: float = Field(gt=0, le=B.MAX_TOKENS)
    stdev: float = Field(default=0.0, ge=0, le=B.MAX_TOKENS)
    min: int | None = Field(default=None, ge=1, le=B.MAX_TOKENS)
    max: int | None = Field(default=None, ge=1, le=B.MAX_TOKENS)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Distribution:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


TokenCount = Annotated[int, Field(gt=0, le=B.MAX_TOKENS)] | Distribution
Tokens = Annotated[int, Field(ge=0, le=B.MAX_TOKENS)]


def _vllm_block_size(value: int) -> int:
    if value not in B.VLLM_BLOCK_SIZES:
        allowed = ", ".join(map(str, B.VLLM_BLOCK_SIZES))
        raise ValueError(f"{value} is not a block size vLLM accepts ({allowed})")
    return value


BlockSize = Annotated[int, AfterValidator(_vllm_block_size)]
DurationS = Annotated[float, Field(ge=0, le=B.MAX_DURATION_S)]


# ----------------------------------------------------------------------------- workloads


class WorkingSetTarget(StrictModel):
    """Size the workload so its working set is `factor` x a KV capacity of the target."""

    capacity: Literal["gpu", "cpu"] = "gpu"
    factor: float = Field(gt=0, le=B.MAX_WORKING_SET_FACTOR)


class MultiTurnSharedPrefix(StrictModel):
    """The seed report's workload: conversations over a shared prefix, each turn resending history."""

    kind: Literal["multi_turn_shared_prefix"]
    prefix_tokens: Tokens
    prefix_count: int = Field(gt=0, le=B.MAX_PREFIX_COUNT)
    turns: int = Field(gt=0, le=B.MAX_TURNS)
    prompt_tokens: TokenCount
    output_tokens: TokenCount
    conversations: int = Field(
        gt=0,
        le=B.MAX_CONVERSATIONS,
        description="conversations generated (GuideLLM's samples / turns)",
    )
    reuse_order: Literal["random", "round_robin", "grouped"] = "random"
    think_time_s: DurationS = 0.0
    working_set: WorkingSetTarget | None = None


class Synthetic(StrictModel):
    """Independent requests of fixed or distributed lengths (the vLLM offload report: 256 in / 128 out)."""

    kind: Literal["synthetic"]
    prompt_tokens: TokenCount
    output_tokens: TokenCount
    requests: int = Field(gt=0, le=B.MAX_REQUESTS_PER_LEVEL)
    shared_prefix_tokens: Tokens = 0


class SharedPrefixGroups(StrictModel):
    """The tiered-prefix-cache guide's workload (inference-perf `shared_prefix`)."""

    kind: Literal["shared_prefix_groups"]
    num_groups: int = Field(gt=0, le=B.MAX_PREFIX_COUNT)
    system_prompt_len: Tokens
    question_len: int = Field(gt=0, le=B.MAX_TOKENS)
    output_len: int = Field(gt=0, le=B.MAX_TOKENS)
    num_prompts_per_group: int = Field(gt=0, le=B.MAX_CONVERSATIONS)
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


DEFAULT_STAGGER_S = 1.0  # stagger window when neither stagger_s nor warmup_s is set


class LoadSpec(StrictModel):
    """How requests are offered. `levels` are concurrencies (concurrent) or rates in req/s."""

    strategy: Literal["concurrent", "constant", "poisson", "sweep", "synchronous"] = "concurrent"
    levels: list[Annotated[float, Field(gt=0, le=B.MAX_LOAD_LEVEL)]] = Field(
        default_factory=lambda: [1.0], min_length=1, max_length=B.MAX_LEVELS
    )
    duration_s: float | None = Field(default=None, gt=0, le=B.MAX_DURATION_S)
    requests_per_level: int | None = Field(default=None, gt=0, le=B.MAX_REQUESTS_PER_LEVEL)
    warmup_s: DurationS = 0.0
    cooldown_s: DurationS = 0.0
    request_timeout_s: float = Field(default=600.0, gt=0, le=B.MAX_REQUEST_TIMEOUT_S)
    sweep_size: int = Field(
        default=10,
        ge=3,
        le=B.MAX_SWEEP_SIZE,
        description="sweep: levels incl. synchronous and throughput",
    )
    max_concurrency: int | None = Field(
        default=None, gt=0, le=B.MAX_LOAD_LEVEL, description="cap for rate strategies"
    )
    api: Literal["completions", "chat"] = "completions"
    stream: bool = True
    stagger_s: float | None = Field(
        default=None,
        ge=0,
        description="concurrent: spread the streams' first requests over this many seconds "
        "(seeded uniform offsets) so identical streams do not run in lock-step waves; "
        "null = the warm-up length when warmup_s > 0, else 1 s; 0 = all streams start at once",
    )

    def effective_stagger_s(self) -> float:
        """The stagger window the concurrent strategy uses (see `stagger_s`)."""
        if self.stagger_s is not None:
            return self.stagger_s
        return self.warmup_s if self.warmup_s > 0 else DEFAULT_STAGGER_S

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
    engines: int = Field(default=1, gt=0, le=B.MAX_LOCAL_ENGINES)
    tensor_parallel_size: int = Field(default=1, gt=0, le=B.MAX_TENSOR_PARALLEL)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    num_gpu_blocks_override: int | None = Field(default=None, ge=2, le=B.MAX_NUM_GPU_BLOCKS)
    max_num_seqs: int = Field(default=256, gt=0, le=B.MAX_NUM_SEQS)
    max_num_batched_tokens: int | None = Field(default=None, gt=0, le=B.MAX_TOKENS)
    max_model_len: int | None = Field(default=None, gt=1, le=B.MAX_TOKENS)
    block_size: BlockSize = 16
    extra_args: list[str] = Field(default_factory=list)


class SimulatedTarget(EmulatedTarget):
    """The emulated stack's components in one process, in virtual time (a discrete-event
    simulation): the same fields as `emulated`, so a spec switches between them unchanged."""

    kind: Literal["simulated"]  # type: ignore[assignment]
    workers: int | None = Field(
        default=None, gt=0, le=256, description="cells simulated in parallel (default: CPU count)"
    )


class VllmTarget(StrictModel):
    """Real `vllm serve` processes on this host."""

    kind: Literal["vllm"]
    vllm_command: list[str] = Field(default_factory=lambda: ["vllm", "serve"])
    model_path: str | None = None  # local model folder; default: the model name
    engines: int = Field(default=1, gt=0, le=B.MAX_LOCAL_ENGINES)
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    startup_timeout_s: float = Field(default=300.0, gt=0, le=B.MAX_DURATION_S)


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
    rollout_timeout_s: float = Field(default=900.0, gt=0, le=B.MAX_DURATION_S)
    engines: int = Field(
        default=1, gt=0, le=B.MAX_K8S_REPLICAS, description="model-server replicas"
    )
    tensor_parallel_size: int = Field(default=1, gt=0, le=B.MAX_TENSOR_PARALLEL)
    max_num_seqs: int = Field(default=1024, gt=0, le=B.MAX_NUM_SEQS)
    block_size: BlockSize = 16
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
    EndpointTarget | EmulatedTarget | SimulatedTarget | VllmTarget | K8sTarget,
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------- the experiment


class CacheProtocol(StrictModel):
    """Per-cell cache-state protocol: reset -> prime -> verify -> measure."""

    reset: bool = True
    prime: bool = False
    verify: bool = True


class CollectSpec(StrictModel):
    interval_s: float = Field(default=1.0, ge=B.MIN_COLLECT_INTERVAL_S, le=3600.0)
    server_metrics: bool = True
    system_metrics: bool = True


class ExperimentSpec(StrictModel):
    name: str = Field(min_length=1, max_length=B.MAX_NAME_CHARS)
    description: str = ""
    seed: int = Field(default=0, ge=0, le=B.MAX_SEED)
    models: list[str] = Field(min_length=1, max_length=100)
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
    repeats: int = Field(default=1, gt=0, le=B.MAX_REPEATS)
    cache: CacheProtocol = Field(default_factory=CacheProtocol)
    collect: CollectSpec = Field(default_factory=CollectSpec)
    output_dir: Path | None = None

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str) -> str:
        """The run directory is `<output root>/<name>-<time>`: a name must stay inside the root."""
        if any(ch in name for ch in "/\\") or name in (".", "..") or name.startswith("."):
            raise ValueError("must be a plain name (no '/', '\\', or leading '.')")
        if any(not ch.isprintable() for ch in name):
            raise ValueError("must hold printable characters only")
        return name

    @model_validator(mode="after")
    def _matrix_is_bounded(self) -> ExperimentSpec:
        knob_values = 1
        for values in self.scenario_params.values():
            knob_values *= max(len(values), 1)
        levels = self.load.sweep_size if self.load.strategy == "sweep" else len(self.load.levels)
        cells = len(self.models) * len(self.scenarios) * knob_values * self.repeats * levels
        if cells > B.MAX_CELLS:
            raise ValueError(
                f"the matrix has {cells} cells (models x scenarios x scenario_params x repeats "
                f"x levels); at most {B.MAX_CELLS}"
            )
        return self


# ----------------------------------------------------------------------------- loading


def format_validation_error(
    source: str, err: ValidationError, root: type[BaseModel] | None = None
) -> str:
    """One line: `<source>: <field.path>: <problem>` for the first error (and a count of the rest).

    Unknown keys are reported first (a misspelt key usually also makes a required one "missing"),
    with the keys that are known there when `root` (the validated model) is given."""
    errors = err.errors()
    # A value given as a mapping where `int | Distribution` is allowed fails both branches; the int
    # branch's "should be a valid integer" is noise next to the Distribution branch's real problem.
    meaningful = [e for e in errors if e["type"] not in _UNION_BRANCH_NOISE] or errors
    meaningful.sort(key=lambda e: e["type"] != "extra_forbidden")  # stable: unknown keys first
    first = meaningful[0]
    loc = [part for part in first["loc"] if not _is_union_tag(part)]
    path = ".".join(_printable(part) for part in loc)
    message = first["msg"].replace("\n", " ")
    if first["type"] == "extra_forbidden" and root is not None:
        known = _known_keys(root, list(first["loc"][:-1]))
        if known:
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            message = f"unknown key; {hint}known keys: {', '.join(known)}"
    more = len(meaningful) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {path or '<top>'}: {message}{suffix}"


_UNION_BRANCH_NOISE = {"int_type", "int_parsing", "model_type"}


def _printable(part: Any) -> str:
    """A location part as shown: a key with control characters (a newline) shown escaped."""
    text = str(part)
    return text if text.isprintable() else repr(text)


def _known_keys(root: type[BaseModel], loc: list[Any]) -> list[str]:
    """The field names of the model found at `loc` (field names, list indexes, union tags)."""
    candidates: list[type[BaseModel]] = [root]
    for part in loc:
        if isinstance(part, int):
            continue
        tagged = [c for c in candidates if _kind_tag(c) == part]
        if tagged:
            candidates = tagged
            continue
        owner = next((c for c in candidates if part in c.model_fields), None)
        if owner is None:
            return []
        candidates = _models_in(owner.model_fields[part].annotation)
    return sorted(candidates[0].model_fields) if len(candidates) == 1 else []


def _kind_tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    args = get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


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
            "simulated",
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
        raise UserError(format_validation_error(source, err, ExperimentSpec)) from None


SWITCHABLE_TARGET_KINDS = ("emulated", "simulated")  # kinds whose fields carry over


def with_target_kind(spec: ExperimentSpec, kind: str) -> ExperimentSpec:
    """`--target KIND`: the same spec on another target kind whose fields carry over."""
    if kind == spec.target.kind:
        return spec
    if kind not in SWITCHABLE_TARGET_KINDS or spec.target.kind not in SWITCHABLE_TARGET_KINDS:
        raise UserError(
            f"--target: cannot switch target.kind {spec.target.kind!r} to {kind!r}; "
            f"fields carry over only between {' and '.join(SWITCHABLE_TARGET_KINDS)}"
        )
    fields = {**spec.target.model_dump(), "kind": kind}
    if kind == "emulated":
        fields.pop("workers", None)  # simulated-only
    target_cls = SimulatedTarget if kind == "simulated" else EmulatedTarget
    return spec.model_copy(update={"target": target_cls.model_validate(fields)})


def load_spec(path: str | Path, check_names: bool = True) -> ExperimentSpec:
    """Read, validate and (with `check_names`) check every name in the spec against the catalogs,
    so that any mistake in it is a one-line UserError before anything starts (also --dry-run)."""
    from kvbench.spec.yaml_load import load_yaml_file

    spec_path = Path(path)
    if not spec_path.is_file():
        raise UserError(f"{spec_path}: no such spec file")
    spec = parse_spec(load_yaml_file(spec_path, ""), str(spec_path))
    # Relative scenario files are relative to the spec file (absolute in the manifest snapshot).
    spec.scenario_files = [
        p if p.is_absolute() else (spec_path.parent / p).resolve() for p in spec.scenario_files
    ]
    if check_names:
        from kvbench.spec.checks import check_spec

        check_spec(spec, str(spec_path), base_dir=spec_path.parent)
    return spec
