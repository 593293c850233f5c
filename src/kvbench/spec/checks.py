"""Checks of a parsed spec against the catalogs, made at load time (also for `--dry-run`).

Contract: `check_spec(spec, source, base_dir)` raises a one-line `UserError` naming the field (and
the known names where a name is wrong) for anything that would otherwise fail only once servers
start or requests are sent:
- scenario and scenario_params names (every target but `endpoint`, whose scenarios are labels);
- for the emulated target: every model and the hardware against the catalogs, and each engine's
  full `vllm serve` argument list (target fields, a cell's engine params, the scenario's flags,
  `extra_args`) through the same parser and checks the engine applies, allocating nothing; so a
  block count larger than the GPU memory, a bad block size or a bad extra flag fail here;
- a cell's engine params (engines, max_num_seqs, ...) within the target field's own bounds;
- the tokens a generated workload would hold in memory (MAX_WORKLOAD_TOKENS), and (emulated) a
  conversation that cannot fit the model's context whatever is sampled;
- a replay file: parsed in full, token ids within the model's vocabulary when the model is in the
  catalog (vLLM answers 400 to an out-of-vocabulary id).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from kvbench.errors import UserError
from kvbench.spec import bounds as B
from kvbench.spec.experiment import (
    Distribution,
    EmulatedTarget,
    ExperimentSpec,
    MultiTurnSharedPrefix,
    Replay,
    SharedPrefixGroups,
    Synthetic,
    format_validation_error,
)

# Addresses exist only once servers start; the checks render scenarios with these stand-ins.
_RUNTIME_STANDINS = dict(
    kv_store_url="redis://127.0.0.1:1",
    kv_store_address="127.0.0.1:1",
    pod_address="127.0.0.1:1",
    kv_events_endpoint="tcp://127.0.0.1:1",
    kv_events_bind="tcp://127.0.0.1:1",
    kv_events_replay_endpoint="tcp://127.0.0.1:1",
)

if TYPE_CHECKING:
    from kvbench.experiment.cells import ScenarioVariant


def check_spec(spec: ExperimentSpec, source: str, base_dir: Path | None = None) -> None:
    _check_workload_size(spec, source)
    if spec.target.kind != "endpoint":
        _check_scenarios(spec, source)
    if isinstance(spec.target, EmulatedTarget):
        _check_emulated(spec, spec.target, source)
    elif spec.target.kind != "endpoint":
        _check_engine_param_bounds(spec, source)
    if isinstance(spec.workload, Replay):
        _check_replay(spec, spec.workload, source, base_dir)


# ----------------------------------------------------------------------------- names


def _check_scenarios(spec: ExperimentSpec, source: str) -> None:
    from kvbench.spec.scenarios import catalog_for_spec, validate_scenarios

    try:
        validate_scenarios(catalog_for_spec(spec), spec.scenarios, spec.scenario_params)
    except UserError as err:
        raise UserError(f"{source}: {err}") from None


def _check_emulated(spec: ExperimentSpec, target: EmulatedTarget, source: str) -> None:
    from kvbench.spec.catalogs import get_hardware, get_model, model_names

    for index, model in enumerate(spec.models):
        try:
            get_model(model)
        except UserError:
            raise UserError(
                f"{source}: models[{index}]: unknown model {model!r} for the emulated target; "
                f"known: {', '.join(model_names())}"
            ) from None
    try:
        get_hardware(target.hardware)
    except UserError as err:
        raise UserError(f"{source}: target.hardware: {str(err).partition(': ')[2]}") from None
    _check_engine_param_bounds(spec, source)
    _check_context_fits(spec, target, source)
    for model in spec.models:
        for variant in _variants(spec):
            _check_engine_argv(
                spec, target, model, variant.label, variant.name, variant.applied_params, source
            )


def _variants(spec: ExperimentSpec) -> list[ScenarioVariant]:
    from kvbench.experiment.cells import scenario_variants

    return scenario_variants(spec)


def _check_engine_param_bounds(spec: ExperimentSpec, source: str) -> None:
    """A swept engine param must satisfy the bounds of the target field it overrides."""
    from kvbench.spec.scenarios import ENGINE_PARAMS

    target_fields = type(spec.target).model_fields
    for key in ENGINE_PARAMS:
        if key not in spec.scenario_params or key not in target_fields:
            continue
        for index, value in enumerate(spec.scenario_params[key]):
            values = value.values() if isinstance(value, dict) else [value]  # per-model mapping
            for one in values:
                _validate_field(spec.target, key, one, f"{source}: scenario_params.{key}[{index}]")


def _validate_field(target: BaseModel, key: str, value: Any, where: str) -> None:
    try:
        type(target).model_validate({**target.model_dump(), key: value})
    except ValidationError as err:
        message = format_validation_error(where, err)
        raise UserError(message.replace(f"{where}: {key}: ", f"{where}: ", 1)) from None


def _check_engine_argv(
    spec: ExperimentSpec,
    target: EmulatedTarget,
    model: str,
    label: str,
    scenario: str,
    params: dict[str, Any],
    source: str,
) -> None:
    """Parse and check the `emulate serve` arguments engine 0 of this cell would get."""
    from kvbench.emulator.api.args import parse_serve_args
    from kvbench.emulator.engine.build import check_engine_args
    from kvbench.emulator.stack import EmulatedLauncher, settings_from_spec
    from kvbench.spec.scenarios import (
        Runtime,
        catalog_for_spec,
        engine_overrides,
        render_scenario,
    )

    where = f"{source}: {model} / {label}"
    try:
        catalog = catalog_for_spec(spec)
        overrides = engine_overrides(catalog, scenario, params, model)
        settings = settings_from_spec(target, model, overrides, spec.seed)
        runtime = Runtime(model, model, block_size=settings.routing_block_size, **_RUNTIME_STANDINS)
        rendered = render_scenario(catalog, scenario, params, runtime)
        flags = settings.flags(port=0) + rendered.engine_args + list(settings.extra_args)
        argv = EmulatedLauncher(target.hardware).command(settings, flags)
        serve_argv = argv[argv.index("serve") + 1 :]
        options = parse_serve_args(serve_argv, rendered.engine_env)
        check_engine_args(options.engine_args)
    except UserError as err:
        message = str(err).removeprefix("emulate serve: ")
        raise UserError(f"{where}: {message}") from None


# ----------------------------------------------------------------------------- workload


def _mean_tokens(count: int | Distribution | None) -> float:
    if count is None:
        return 0.0
    return float(count.mean if isinstance(count, Distribution) else count)


def estimated_workload_tokens(spec: ExperimentSpec) -> float:
    """Token ids a generated workload holds in memory: prefixes plus every turn's question."""
    work = spec.workload
    if isinstance(work, MultiTurnSharedPrefix):
        questions = work.conversations * work.turns * _mean_tokens(work.prompt_tokens)
        return work.prefix_count * work.prefix_tokens + questions
    if isinstance(work, Synthetic):
        return work.requests * _mean_tokens(work.prompt_tokens) + work.shared_prefix_tokens
    if isinstance(work, SharedPrefixGroups):
        questions = work.num_groups * work.num_prompts_per_group * work.question_len
        return work.num_groups * work.system_prompt_len + questions
    return 0.0  # a replay holds what its file holds


def _fewest_tokens(count: int | Distribution) -> float:
    """A lower bound of a token count: the count, or a distribution's min (else its mean)."""
    if isinstance(count, Distribution):
        return float(count.min if count.min is not None else count.mean)
    return float(count)


def shortest_longest_conversation_tokens(spec: ExperimentSpec) -> float:
    """A lower bound of the longest conversation's tokens (prefix + every turn's question and
    answer): if even this does not fit the context, no sample of the workload can."""
    work = spec.workload
    if isinstance(work, MultiTurnSharedPrefix):
        turn = _fewest_tokens(work.prompt_tokens) + _fewest_tokens(work.output_tokens)
        return work.prefix_tokens + work.turns * turn
    if isinstance(work, Synthetic):
        turn = _fewest_tokens(work.prompt_tokens) + _fewest_tokens(work.output_tokens)
        return work.shared_prefix_tokens + turn
    if isinstance(work, SharedPrefixGroups):
        return work.system_prompt_len + work.question_len + work.output_len
    return 0.0


def _check_context_fits(spec: ExperimentSpec, target: EmulatedTarget, source: str) -> None:
    from kvbench.spec.catalogs import get_model

    needed = shortest_longest_conversation_tokens(spec)
    for model in spec.models:
        context = target.max_model_len or get_model(model).max_context_tokens
        if needed > context:
            raise UserError(
                f"{source}: workload: a conversation needs at least {needed:.0f} tokens (prefix + "
                f"every turn's question and answer) but {model} serves {context} "
                f"(target.max_model_len or the model's context)"
            )


def _check_workload_size(spec: ExperimentSpec, source: str) -> None:
    tokens = estimated_workload_tokens(spec)
    if tokens > B.MAX_WORKLOAD_TOKENS:
        raise UserError(
            f"{source}: workload: it would hold about {tokens:.3g} prompt tokens in memory "
            f"(prefixes + every question); at most {B.MAX_WORKLOAD_TOKENS:.3g}: "
            f"lower conversations / requests / lengths"
        )


def _check_replay(spec: ExperimentSpec, replay: Replay, source: str, base_dir: Path | None) -> None:
    from kvbench.spec.catalogs import get_model
    from kvbench.workload.replay import load_replay

    vocab: tuple[str, int] | None = None
    for model in spec.models:
        try:
            profile = get_model(model)
        except UserError:
            continue  # a model the catalog does not know: its vocabulary is not known either
        if vocab is None or profile.vocab_size < vocab[1]:
            vocab = (profile.name, profile.vocab_size)
    load_replay(replay, spec.seed, base_dir, vocab=vocab)
