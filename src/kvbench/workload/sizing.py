"""Capacity-aware sizing: make a workload's working set a chosen multiple of a KV capacity.

Working set = unique KV tokens the workload touches: each distinct shared prefix once, plus every
conversation's own history (questions and answers). A spec asks for
`working_set: {capacity: gpu|cpu, factor: F}`; the target tells the capacities in tokens
(`DeploymentFacts.gpu_kv_capacity_tokens` / `.cpu_kv_capacity_tokens`).

How the counts change (the expected per-conversation history h uses the mean lengths):
- multi_turn_shared_prefix: target W = F x capacity. prefix_count P = round((W - N*h) / prefix_tokens)
  with the conversation count N kept; when that P exceeds N (a prefix no conversation uses adds
  nothing), N = P = round(W / (prefix_tokens + h)); when the history alone exceeds W, P = 1 and a
  note says the target is below the floor. With prefix_tokens = 0, N = round(W / h).
- shared_prefix_groups: num_groups G = round(W / (system_prompt_len + prompts_per_group * (question_len + output_len))).
Every change is written to `Workload.notes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvbench.results.deployment import DeploymentFacts
from kvbench.spec.experiment import MultiTurnSharedPrefix, SharedPrefixGroups
from kvbench.workload.tokens import mean_count
from kvbench.workload.types import WorkingSet


@dataclass(frozen=True)
class KvCapacities:
    gpu_tokens: int | None = None
    cpu_tokens: int | None = None

    @classmethod
    def from_facts(cls, facts: DeploymentFacts) -> KvCapacities:
        return cls(facts.gpu_kv_capacity_tokens, facts.cpu_kv_capacity_tokens)

    def get(self, which: str) -> int | None:
        return self.gpu_tokens if which == "gpu" else self.cpu_tokens


def conversation_history_tokens(spec: MultiTurnSharedPrefix) -> float:
    return spec.turns * (mean_count(spec.prompt_tokens) + mean_count(spec.output_tokens))


def size_multi_turn(
    spec: MultiTurnSharedPrefix, caps: KvCapacities
) -> tuple[MultiTurnSharedPrefix, list[str]]:
    target = _target_tokens(spec.working_set, caps)
    if target is None or spec.working_set is None:
        return spec, _unknown_note(spec.working_set)
    history = conversation_history_tokens(spec)
    convs, prefixes = spec.conversations, spec.prefix_count
    notes: list[str] = []
    if spec.prefix_tokens == 0:
        convs = max(1, round(target / history))
    else:
        prefixes = round((target - convs * history) / spec.prefix_tokens)
        if prefixes > convs:
            prefixes = convs = max(1, round(target / (spec.prefix_tokens + history)))
        elif prefixes < 1:
            prefixes = 1
            floor = convs * history + spec.prefix_tokens
            notes.append(
                f"working set target {target:.0f} tokens is below the floor {floor:.0f} "
                f"of {convs} conversations; reduce workload.conversations"
            )
    notes.insert(
        0,
        f"working_set {spec.working_set.factor:g} x {spec.working_set.capacity} capacity "
        f"= {target:.0f} tokens: prefix_count {spec.prefix_count} -> {prefixes}, "
        f"conversations {spec.conversations} -> {convs}",
    )
    return spec.model_copy(update={"prefix_count": prefixes, "conversations": convs}), notes


def size_groups(
    spec: SharedPrefixGroups, caps: KvCapacities
) -> tuple[SharedPrefixGroups, list[str]]:
    target = _target_tokens(spec.working_set, caps)
    if target is None or spec.working_set is None:
        return spec, _unknown_note(spec.working_set)
    per_group = spec.system_prompt_len + spec.num_prompts_per_group * (
        spec.question_len + spec.output_len
    )
    groups = max(1, round(target / per_group))
    note = (
        f"working_set {spec.working_set.factor:g} x {spec.working_set.capacity} capacity = {target:.0f} "
        f"tokens: num_groups {spec.num_groups} -> {groups}"
    )
    return spec.model_copy(update={"num_groups": groups}), [note]


def capacity_report(working_set: WorkingSet, caps: KvCapacities) -> dict[str, Any]:
    """The working set against each known capacity (ratio > 1: it cannot all stay in that tier)."""
    report: dict[str, Any] = {
        "unique_prefix_tokens": working_set.unique_prefix_tokens,
        "history_tokens": working_set.history_tokens,
        "working_set_tokens": working_set.total_tokens,
    }
    for name, capacity in (("gpu", caps.gpu_tokens), ("cpu", caps.cpu_tokens)):
        report[f"{name}_kv_capacity_tokens"] = capacity
        report[f"working_set_over_{name}"] = (
            (working_set.total_tokens / capacity) if capacity else None
        )
    return report


def _target_tokens(target, caps: KvCapacities) -> float | None:
    if target is None:
        return None
    capacity = caps.get(target.capacity)
    return None if not capacity else target.factor * capacity


def _unknown_note(target) -> list[str]:
    if target is None:
        return []
    return [
        f"working_set asks for {target.factor:g} x the {target.capacity} KV capacity, but the target "
        f"does not report it ({target.capacity}_kv_capacity_tokens); counts left as written"
    ]
