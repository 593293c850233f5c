"""One entry point: `build_workload(spec, seed, capacities)` -> (Workload, capacity report).

Capacity-aware sizing (sizing.py) is applied first when the spec asks for a working set; the
notes of what changed land in `Workload.notes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvbench.spec.experiment import MultiTurnSharedPrefix, Replay, SharedPrefixGroups, Synthetic
from kvbench.workload import generators
from kvbench.workload.replay import load_replay
from kvbench.workload.sizing import KvCapacities, capacity_report, size_groups, size_multi_turn
from kvbench.workload.types import Workload


def build_workload(
    spec: Any, seed: int, capacities: KvCapacities | None = None, base_dir: Path | None = None
) -> tuple[Workload, dict[str, Any]]:
    caps = capacities or KvCapacities()
    notes: list[str] = []
    if isinstance(spec, MultiTurnSharedPrefix):
        spec, notes = size_multi_turn(spec, caps)
        workload = generators.multi_turn_shared_prefix(spec, seed)
    elif isinstance(spec, SharedPrefixGroups):
        spec, notes = size_groups(spec, caps)
        workload = generators.shared_prefix_groups(spec, seed)
    elif isinstance(spec, Synthetic):
        workload = generators.synthetic(spec, seed)
    elif isinstance(spec, Replay):
        workload = load_replay(spec, seed, base_dir)
    else:  # the spec's discriminated union makes this unreachable from YAML
        raise TypeError(f"unknown workload spec {type(spec).__name__}")
    workload.notes.extend(notes)
    report = capacity_report(workload.working_set, caps)
    report["notes"] = list(workload.notes)
    return workload, report


def longest_conversation_tokens(workload: Workload) -> int:
    """The largest prompt + output any request of the workload needs: prefix + all turns of one
    conversation (each answer counted at its max_tokens)."""
    longest = 0
    for conv in workload.conversations:
        total = len(conv.prefix_token_ids) or generators._text_tokens_estimate(conv.prefix_text)
        total += sum(generators._question_len(t) + t.output_tokens for t in conv.turns)
        longest = max(longest, total)
    return longest
