"""'What was run': the system under test with versions, per scenario the exact engine command,
environment, router config and KV store, the KV capacities of each tier in tokens and GB, the
workload's parameters and working set against those capacities, the load profile and windows."""

from __future__ import annotations

from typing import Any

from kvbench.report.data import ReportData
from kvbench.report.run_facts import (
    LoadFacts,
    ScenarioSetup,
    kv_bytes_per_token,
    load_facts,
    router_config_text,
    setups,
)
from kvbench.report.tables import md_table


def setup_section(data: ReportData) -> list[str]:
    lines = ["## What was run", ""]
    lines += _system(data)
    all_setups = setups(data.run)
    lines += _capacities(all_setups)
    lines += _workload(data, all_setups)
    lines += _load(load_facts(data.run))
    lines += _scenarios(all_setups)
    return lines


def _system(data: ReportData) -> list[str]:
    m = data.run.manifest
    sut = m.system_under_test
    host = m.host
    lines = ["### System under test", "", f"- Kind `{sut.kind}` (described at the top)."]
    shown = {k: v for k, v in (sut.details or {}).items() if isinstance(v, (str, int, float, bool))}
    if shown:
        lines.append("- " + "; ".join(f"{k}: {v}" for k, v in shown.items()) + ".")
    if host.hostname:
        memory = host.memory_total_bytes
        lines.append(
            f"- Load generator host: {host.hostname}, {host.cpu_count_logical or '?'} logical CPUs"
            + (f", {memory / 1e9:.1f} GB memory" if memory else "")
            + f", {host.platform or ''}, Python {host.python or '?'}."
        )
    if m.versions:
        lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in m.versions.items()) + ".")
    return lines + [""]


def _capacities(all_setups: list[ScenarioSetup]) -> list[str]:
    rows = [
        [
            s.model.split("/")[-1],
            s.scenario,
            c.tier,
            f"{c.tokens:,}" if c.tokens is not None else "n/a",
            f"{c.tokens_per_engine:,}" if c.tokens_per_engine is not None else "—",
            c.gb_text,
        ]
        for s in all_setups
        for c in s.capacities
    ]
    lines = ["### KV-cache capacity per tier", ""]
    if not rows:
        return lines + ["The target recorded no KV capacities (e.g. an existing endpoint).", ""]
    per_token = {s.model: kv_bytes_per_token(s.model) for s in all_setups}
    note = "; ".join(f"{m.split('/')[-1]} {b:,} bytes per token" for m, b in per_token.items() if b)
    lines += [
        "Tokens of KV cache each tier holds (all engines together, and per engine); GB = tokens "
        f"x the model's KV bytes per token (K and V of every layer: {note or 'model not in the catalog'}).",
        "",
    ]
    return (
        lines
        + md_table(["Model", "Scenario", "Tier", "Tokens", "Tokens per engine", "GB"], rows)
        + [""]
    )


def _workload(data: ReportData, all_setups: list[ScenarioSetup]) -> list[str]:
    spec = data.run.manifest.spec if isinstance(data.run.manifest.spec, dict) else {}
    workload: dict[str, Any] = spec.get("workload") or {}
    lines = ["### Workload", ""]
    if workload:
        lines.append("- Parameters: " + ", ".join(f"`{k}: {v}`" for k, v in workload.items()) + ".")
    first = next((s for s in all_setups if s.working_set is not None), None)
    if first is not None and first.working_set is not None:
        ws = first.working_set
        gpu = next((c for c in first.capacities if c.tier == "GPU"), None)
        against = []
        if gpu is not None and gpu.tokens and ws.working_set_tokens is not None:
            against.append(f"{ws.working_set_tokens / gpu.tokens:.2f}x the GPU KV cache")
        biggest_cpu = max(
            (c.tokens for s in all_setups for c in s.capacities if c.tier == "CPU" and c.tokens),
            default=None,
        )
        if biggest_cpu and ws.working_set_tokens is not None:
            against.append(f"{ws.working_set_tokens / biggest_cpu:.2f}x the largest CPU tier")
        lines.append(
            f"- Working set: {_tokens(ws.working_set_tokens)} tokens = unique prefixes "
            f"{_tokens(ws.unique_prefix_tokens)} + conversation history {_tokens(ws.history_tokens)}"
            + (f"; that is {' and '.join(against)}" if against else "")
            + "."
        )
    if first is not None and first.conversations is not None:
        lines.append(f"- Conversations per cell: {first.conversations:,}.")
    if len(lines) == 2:
        lines.append("- Not recorded in this run directory.")
    return lines + [""]


def _tokens(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _load(load: LoadFacts) -> list[str]:
    stop = []
    if load.duration_s is not None:
        stop.append(f"{load.duration_s:g} s per level")
    if load.requests_per_level is not None:
        stop.append(f"{load.requests_per_level:,} measured requests per level")
    levels = ", ".join(f"{lv:g}" for lv in load.levels)
    lines = [
        "### Load profile",
        "",
        f"- Strategy `{load.strategy}`; levels {levels}"
        + (f" ({load.level_unit})" if load.level_unit else "")
        + f"; {' or '.join(stop) or 'no stop recorded'}; {load.repeats} repeat"
        + ("s" if load.repeats != 1 else "")
        + ".",
        f"- Warm-up {load.warmup_s:g} s and cool-down {load.cooldown_s:g} s, excluded from "
        "every statistic.",
    ]
    if load.strategy == "concurrent":
        lines.append(
            "- Stream starts: "
            + (
                "all at once (recorded before streams were staggered)"
                if load.stagger_s is None
                else "all at once"
                if load.stagger_s == 0
                else f"staggered over {load.stagger_s:g} s (seeded uniform offsets)"
            )
            + "."
        )
    if load.windows_s:
        low, high = min(load.windows_s), max(load.windows_s)
        span = f"{low:.1f} s" if abs(high - low) < 0.05 else f"{low:.1f}-{high:.1f} s"
        lines.append(f"- Measure window per cell: {span}.")
    return lines + [""]


def _scenarios(all_setups: list[ScenarioSetup]) -> list[str]:
    lines = ["### Scenario configurations", ""]
    router_seen: dict[str, str] = {}  # router config text -> the first scenario that ran it
    for s in all_setups:
        lines += [f"#### {s.model.split('/')[-1]} / {s.scenario}", "", "```bash", s.engine_command]
        lines += [f"# env {k}={v}" for k, v in sorted(s.engine_env.items())]
        lines += ["```", ""]
        if s.kv_store:
            lines.append(f"- KV store: {s.kv_store}.")
        if s.engines:
            lines.append(
                "- Engines: " + ", ".join(f"{n} at {url}" for n, url in s.engines.items()) + "."
            )
        params = {k: v for k, v in sorted(s.scenario_params.items()) if v is not None}
        if params:
            lines.append(
                "- Scenario parameters: " + ", ".join(f"`{k}={v}`" for k, v in params.items()) + "."
            )
        router = router_config_text(s.router_config_path)
        if router and router in router_seen:
            lines.append(f"- Router: the same EndpointPickerConfig as {router_seen[router]}.")
        elif router:
            router_seen[router] = s.scenario
            lines += ["", "Router (EndpointPickerConfig):", "", "```yaml", router.rstrip(), "```"]
        lines.append("")
    return lines
