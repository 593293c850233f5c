"""`kvbench run SPEC --dry-run`: show what a run would do, start nothing, write nothing.

It prints the cell matrix and, per (model, scenario), the exact configuration the target would
apply: for `k8s` the rendered llm-d manifests (what `kubectl apply` would get), for `emulated` and
`vllm` the engine flags, environment and EPP config. Addresses that only exist once servers start
(ports, store URLs) are shown as `<...>` placeholders.
"""

from __future__ import annotations

from rich.console import Console

from kvbench.experiment.cells import CellPlan
from kvbench.spec.experiment import ExperimentSpec
from kvbench.spec.scenarios import Runtime, catalog_for_spec, render_scenario

_PLACEHOLDERS = dict(
    kv_store_url="<kv-store-url>",
    kv_store_address="<kv-store-url>",
    pod_address="<engine-address>",
    kv_events_endpoint="<router-events-endpoint>",
    kv_events_bind="<router-events-endpoint>",
    kv_events_replay_endpoint="<engine-replay-endpoint>",
)


def print_dry_run(spec: ExperimentSpec, plans: list[CellPlan], out: Console) -> int:
    from kvbench.experiment.estimate import estimate_run

    out.print(
        f"# {spec.name}: {len(plans)} cells on target `{spec.target.kind}` (dry run: nothing started)"
    )
    estimate = estimate_run(spec, plans)
    note = (
        " (what the same cells take live; the simulated target runs in virtual time, far faster)"
        if spec.target.kind == "simulated"
        else ""
    )
    out.print(f"estimated duration: {estimate.text()}{note}", highlight=False, markup=False)
    for plan in plans:
        out.print(
            f"cell {plan.cell_id}  strategy={plan.strategy} level={plan.level:g}", highlight=False
        )
    seen: set[tuple[str, str]] = set()
    for plan in plans:
        key = (plan.model, plan.scenario)
        if key in seen or spec.target.kind == "endpoint":
            continue
        seen.add(key)
        out.print(f"\n## {plan.model} / {plan.scenario}", highlight=False)
        out.print(_render(spec, plan), highlight=False, markup=False, soft_wrap=True)
    return 0


def _render(spec: ExperimentSpec, plan: CellPlan) -> str:
    catalog = catalog_for_spec(spec)
    if spec.target.kind == "k8s":
        from kvbench.targets.k8s_manifests import dump_yaml, render_manifests

        return dump_yaml(
            render_manifests(
                catalog, spec.target, plan.model, plan.scenario_name, plan.scenario_params
            )
        )
    if spec.target.kind == "vllm":
        from kvbench.targets.vllm import dry_run_engine_lines

        engine_lines = dry_run_engine_lines(
            spec.target, catalog, plan.model, plan.scenario_name, plan.scenario_params, spec.seed
        )
    else:
        engine_lines = []
    block_size = getattr(spec.target, "block_size", 16)
    runtime = Runtime(plan.model, plan.model, block_size=block_size, **_PLACEHOLDERS)
    rendered = render_scenario(catalog, plan.scenario_name, plan.scenario_params, runtime)
    from kvbench.report.run_facts import engine_command
    from kvbench.spec.scenarios import engine_overrides

    target = spec.target.model_dump(mode="json")
    overrides = engine_overrides(catalog, plan.scenario_name, plan.scenario_params, plan.model)
    engines = int(overrides.get("engines", target.get("engines", 1)) or 1)
    tp = int(overrides.get("tensor_parallel_size", target.get("tensor_parallel_size", 1)) or 1)
    hardware = target.get("hardware") or "the host's GPUs"
    lines = [
        f"engines: {engines} x TP={tp} on {hardware}"
        + (" (behind the router)" if engines > 1 or spec.target.kind != "vllm" else ""),
        "engine command: "
        + engine_command(plan.model, target, list(rendered.engine_args), overrides),
    ]
    lines += [f"env: {name}={value}" for name, value in sorted(rendered.engine_env.items())]
    lines += engine_lines
    if rendered.kv_store is not None:
        lines.append(f"kv store: {rendered.kv_store.kind}")
    lines.append("router config (EndpointPickerConfig):")
    lines.append(rendered.epp_config_yaml().rstrip())
    return "\n".join(lines)
