"""The experiment-spec reference (docs/spec.md, `kvbench spec --reference`) and the summary.json
reference (docs/summary-json.md), generated from the pydantic models so they cannot drift.

Per model, one table: field, type, default ('required' when none), bounds, unit (from the name's
suffix: _s seconds, _ms milliseconds, _tokens tokens, _bytes bytes, _pct percent) and meaning (the
field's `description`, else `NOTES`). `NOTES` holds the meaning of fields whose model has no
description yet; a test checks every key names a real field and every field has a meaning. Each
workload kind gets an example (`WORKLOAD_EXAMPLES`), validated against the model by the tests.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kvbench.spec import experiment as E

UNITS = (
    ("_ms", "ms"),
    ("_s", "s"),
    ("_tokens", "tokens"),
    ("_bytes", "bytes"),
    ("_pct", "%"),
    ("_gb", "GB"),
)

NOTES: dict[str, str] = {
    "ExperimentSpec.name": "run name: the run directory is <output root>/<name>-<UTC time>",
    "ExperimentSpec.description": "free text, shown in the report",
    "ExperimentSpec.seed": "base seed; repeat r uses seed + r for the workload and the load",
    "ExperimentSpec.models": "models to run (catalog names, e.g. Qwen/Qwen3-8B)",
    "ExperimentSpec.scenarios": "scenario labels from the catalog (no-offload, native-offload, "
    "lmcache-local, lmcache-redis, lmcache-valkey, llm-d-redis, llm-d-valkey) or scenario_files",
    "ExperimentSpec.target": "the system under test: one of the target kinds below",
    "ExperimentSpec.workload": "what is sent: one of the workload kinds below",
    "ExperimentSpec.load": "how it is offered: strategy, levels, windows",
    "ExperimentSpec.repeats": "repeats of every cell (3 or more for firm verdicts)",
    "ExperimentSpec.cache": "per-cell cache-state protocol",
    "ExperimentSpec.collect": "what is scraped while a cell runs",
    "ExperimentSpec.output_dir": "run directory root; --out overrides it",
    "Distribution.kind": "fixed uses mean only; uniform spans [mean - stdev, mean + stdev]",
    "Distribution.mean": "mean length, tokens",
    "Distribution.stdev": "standard deviation, tokens",
    "Distribution.min": "samples are clipped to at least this, tokens",
    "Distribution.max": "samples are clipped to at most this, tokens",
    "WorkingSetTarget.capacity": "which KV capacity of the target the working set is sized against",
    "WorkingSetTarget.factor": "working set = factor x that capacity (prefix_count is derived)",
    "MultiTurnSharedPrefix.kind": "selects this workload",
    "MultiTurnSharedPrefix.prefix_tokens": "length of each shared prefix (system prompt), tokens",
    "MultiTurnSharedPrefix.prefix_count": "distinct shared prefixes; conversations spread over them",
    "MultiTurnSharedPrefix.turns": "turns per conversation; each resends the whole history",
    "MultiTurnSharedPrefix.prompt_tokens": "new user tokens per turn: a count or a Distribution",
    "MultiTurnSharedPrefix.output_tokens": "answer tokens per turn: a count or a Distribution",
    "MultiTurnSharedPrefix.reuse_order": "order in which prefixes come back: random, round_robin "
    "(LRU's worst case) or grouped",
    "MultiTurnSharedPrefix.think_time_s": "pause between a turn's answer and the next turn",
    "MultiTurnSharedPrefix.working_set": "size the workload against the target's KV capacity",
    "Synthetic.kind": "selects this workload",
    "Synthetic.prompt_tokens": "prompt length: a count or a Distribution",
    "Synthetic.output_tokens": "answer length: a count or a Distribution",
    "Synthetic.requests": "requests generated",
    "Synthetic.shared_prefix_tokens": "a prefix every request shares, tokens (0 = none)",
    "SharedPrefixGroups.kind": "selects this workload",
    "SharedPrefixGroups.num_groups": "groups, each with its own system prompt",
    "SharedPrefixGroups.system_prompt_len": "system prompt length per group, tokens",
    "SharedPrefixGroups.question_len": "question length, tokens",
    "SharedPrefixGroups.output_len": "answer length, tokens",
    "SharedPrefixGroups.num_prompts_per_group": "questions per group",
    "SharedPrefixGroups.reuse_order": "order in which groups come back",
    "SharedPrefixGroups.working_set": "size the workload against the target's KV capacity",
    "Replay.kind": "selects this workload",
    "Replay.path": "JSONL file of conversations (token ids or text), relative to the spec",
    "Replay.output_tokens": "answer length when the file gives none",
    "LoadSpec.strategy": "concurrent (N streams), constant / poisson (req/s), sweep (GuideLLM's), "
    "synchronous (1 stream)",
    "LoadSpec.levels": "load levels: streams (concurrent) or req/s (constant, poisson)",
    "LoadSpec.duration_s": "length of each level, warm-up and cool-down included",
    "LoadSpec.requests_per_level": "stop a level after this many measured requests",
    "LoadSpec.warmup_s": "start of each level excluded from statistics",
    "LoadSpec.cooldown_s": "end of each level excluded from statistics",
    "LoadSpec.request_timeout_s": "a request taking longer is recorded as a timeout",
    "LoadSpec.max_concurrency": "cap on requests in flight for rate strategies",
    "LoadSpec.api": "OpenAI endpoint: /v1/completions (token ids) or /v1/chat/completions (text)",
    "LoadSpec.stream": "stream responses (needed for TTFT and ITL)",
    "EndpointTarget.kind": "an OpenAI-compatible server that is already running",
    "EndpointTarget.url": "its base URL",
    "EndpointTarget.metrics_urls": "Prometheus /metrics URLs to scrape",
    "EndpointTarget.model_name": "served model name (default: the first of /v1/models)",
    "EmulatedTarget.kind": "kvbench's emulated vLLM engines over real HTTP (no GPU)",
    "EmulatedTarget.hardware": "hardware profile from the catalog (L40S, A100-80GB, H100-SXM, "
    "H200) or a calibrated profile file",
    "EmulatedTarget.engines": "engines behind the router",
    "EmulatedTarget.tensor_parallel_size": "vLLM --tensor-parallel-size",
    "EmulatedTarget.gpu_memory_utilization": "vLLM --gpu-memory-utilization (share of HBM)",
    "EmulatedTarget.num_gpu_blocks_override": "vLLM --num-gpu-blocks-override: GPU KV blocks per "
    "engine",
    "EmulatedTarget.max_num_seqs": "vLLM --max-num-seqs",
    "EmulatedTarget.max_num_batched_tokens": "vLLM --max-num-batched-tokens (chunked prefill budget)",
    "EmulatedTarget.max_model_len": "vLLM --max-model-len, tokens",
    "EmulatedTarget.block_size": "vLLM --block-size: tokens per KV block",
    "EmulatedTarget.extra_args": "more vllm serve flags, verbatim",
    "SimulatedTarget.kind": "the emulated stack in virtual time (discrete-event simulation), "
    "fields as emulated",
    "VllmTarget.kind": "real vllm serve processes on this host",
    "VllmTarget.vllm_command": "the command that starts vLLM",
    "VllmTarget.model_path": "local model folder (default: the model name)",
    "VllmTarget.engines": "engines behind the router",
    "VllmTarget.extra_args": "more vllm serve flags, verbatim",
    "VllmTarget.env": "extra environment of the engines",
    "VllmTarget.startup_timeout_s": "how long an engine may take to become healthy",
    "K8sTarget.kind": "an llm-d deployment on Kubernetes",
    "K8sTarget.namespace": "namespace of the deployment",
    "K8sTarget.kubeconfig": "kubeconfig file (default: in-cluster or ~/.kube/config)",
    "K8sTarget.gateway_url": "URL of the inference gateway the load goes to",
    "K8sTarget.dry_run": "render the manifests only, like --dry-run",
    "K8sTarget.model_server_deployment": "Deployment of the vLLM pods",
    "K8sTarget.epp_configmap": "ConfigMap holding the EPP config",
    "K8sTarget.epp_deployment": "Deployment of the endpoint picker",
    "K8sTarget.rollout_timeout_s": "how long a rollout may take",
    "K8sTarget.tensor_parallel_size": "vLLM --tensor-parallel-size",
    "K8sTarget.max_num_seqs": "vLLM --max-num-seqs",
    "K8sTarget.block_size": "vLLM --block-size: tokens per KV block",
    "K8sTarget.epp_config_key": "the EPP ConfigMap's data key (GIE pluginsConfigFile)",
    "K8sTarget.image": "model server image when kvbench creates it",
    "K8sTarget.extra_args": "more vllm serve flags, verbatim",
    "CacheProtocol.reset": "reset every cache (engines, stores) before each cell",
    "CacheProtocol.prime": "send each shared prefix once before measuring (steady state)",
    "CacheProtocol.verify": "check the first measured requests find the cache as expected",
    "CollectSpec.interval_s": "scrape interval",
    "CollectSpec.server_metrics": "scrape the engines' and router's /metrics",
    "CollectSpec.system_metrics": "sample client CPU, RSS and event-loop lag",
}

WORKLOAD_EXAMPLES: dict[str, str] = {
    "multi_turn_shared_prefix": """workload:
  kind: multi_turn_shared_prefix
  prefix_tokens: 6000        # 30 users sharing a 6k-token system prompt
  prefix_count: 1
  turns: 5
  prompt_tokens: 128
  output_tokens: {kind: normal, mean: 128, stdev: 32, min: 16}
  conversations: 300
  reuse_order: random
  think_time_s: 2.0
  working_set: {capacity: gpu, factor: 2.0}   # derive prefix_count for 2x the GPU KV cache
""",
    "synthetic": """workload:
  kind: synthetic
  prompt_tokens: 256
  output_tokens: 128
  requests: 2000
""",
    "shared_prefix_groups": """workload:
  kind: shared_prefix_groups
  num_groups: 8
  system_prompt_len: 4096
  question_len: 256
  output_len: 256
  num_prompts_per_group: 50
""",
    "replay": """workload:
  kind: replay
  path: conversations.jsonl
  output_tokens: 256
""",
}

SPEC_HEAD = """# Experiment spec reference

Generated from kvbench's pydantic models (`kvbench spec --reference`); a test keeps this file equal
to the output. A spec is YAML; unknown keys are rejected. Units follow the field name: `_s`
seconds, `_ms` milliseconds, `_tokens` tokens; token lengths without a suffix (`prefix_tokens`,
`prompt_tokens`, ...) are tokens too. "required" = no default.
"""

SUMMARY_HEAD = """# summary.json reference

`kvbench report RUN --format json` writes `report/summary.json`: everything the report's tables
show, one document per run. Generated from the models in `kvbench/report/summary_json.py`
(`kvbench spec --summary-reference`); a test keeps this file equal to the output. Numbers that are
not defined (no interval with one repeat) are `null`.
"""


def _type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        parts = [_type_text(a) for a in get_args(annotation) if a is not type(None)]
        optional = type(None) in get_args(annotation)
        return " or ".join(parts) + (" or null" if optional else "")
    if origin is typing.Annotated:
        return _type_text(get_args(annotation)[0])
    if origin in (list, dict):
        inner = ", ".join(_type_text(a) for a in get_args(annotation))
        return f"{origin.__name__}[{inner}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _default_text(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "(defaults)"
    return f"`{value!r}`" if value is not None else "null"


def _bounds_text(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(parts)


def _unit(name: str) -> str:
    return next((unit for suffix, unit in UNITS if name.endswith(suffix)), "")


def meaning(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    if info.description:
        return info.description
    for cls in model.__mro__:  # a subclass (SimulatedTarget) inherits its base's notes
        note = NOTES.get(f"{cls.__name__}.{name}")
        if note:
            return note
    return ""


def model_table(model: type[BaseModel]) -> list[str]:
    rows = ["| Field | Type | Default | Bounds | Unit | Meaning |", "|---|---|---|---|---|---|"]
    for name, info in model.model_fields.items():
        cells = [
            f"`{name}`",
            _type_text(info.annotation),
            _default_text(info),
            _bounds_text(info),
            _unit(name),
            meaning(model, name).replace("|", "\\|"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


SPEC_SECTIONS: tuple[tuple[str, list[type[BaseModel]]], ...] = (
    ("Top level", [E.ExperimentSpec]),
    ("Load (`load:`)", [E.LoadSpec]),
    ("Cache-state protocol (`cache:`)", [E.CacheProtocol]),
    ("Collection (`collect:`)", [E.CollectSpec]),
    (
        "Targets (`target:`, by `kind`)",
        [E.EmulatedTarget, E.SimulatedTarget, E.VllmTarget, E.K8sTarget, E.EndpointTarget],
    ),
    (
        "Workloads (`workload:`, by `kind`)",
        [E.MultiTurnSharedPrefix, E.Synthetic, E.SharedPrefixGroups, E.Replay],
    ),
    ("Token-length distributions", [E.Distribution]),
    ("Working-set sizing (`working_set:`)", [E.WorkingSetTarget]),
)


def spec_models() -> list[type[BaseModel]]:
    return [m for _, models in SPEC_SECTIONS for m in models]


def _kind_of(model: type[BaseModel]) -> str | None:
    kind = model.model_fields.get("kind")
    if kind is None or get_origin(kind.annotation) is not Literal:
        return None
    args = get_args(kind.annotation)
    return str(args[0]) if len(args) == 1 else None


def spec_reference_markdown() -> str:
    lines = [SPEC_HEAD]
    for title, models in SPEC_SECTIONS:
        lines += [f"## {title}", ""]
        for model in models:
            kind = _kind_of(model)
            lines += [f"### {model.__name__}" + (f" (`kind: {kind}`)" if kind else ""), ""]
            if model.__doc__:
                lines += [" ".join(model.__doc__.split()), ""]
            lines += model_table(model) + [""]
            if kind in WORKLOAD_EXAMPLES:
                lines += ["Example:", "", "```yaml", WORKLOAD_EXAMPLES[kind].rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def summary_reference_markdown() -> str:
    from kvbench.report import summary_json as S

    models: list[type[BaseModel]] = [
        S.ReportSummary,
        S.ModelSummary,
        S.Recommendation,
        S.ScenarioVerdict,
        S.DeltaJson,
        S.LatencyJson,
        S.CapacityJson,
        S.CheckJson,
        S.CellJson,
        S.TwinJson,
        S.HitSplitJson,
    ]
    lines = [SUMMARY_HEAD]
    for model in models:
        lines += [f"## {model.__name__}", ""]
        if model.__doc__ and model.__doc__ != BaseModel.__doc__:
            lines += [" ".join(model.__doc__.split()), ""]
        lines += model_table(model) + [""]
    return "\n".join(lines).rstrip() + "\n"
