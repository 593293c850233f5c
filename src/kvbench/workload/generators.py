"""The synthetic workload generators: pure functions of (spec, seed) -> Workload.

Every generator draws from its own `numpy.random.Generator(seed)`, so the same spec and seed give
the same token ids in the same order on every machine. Prefixes are drawn before questions, so
changing the number of turns does not change the prefixes.
"""

from __future__ import annotations

import numpy as np

from kvbench.spec.experiment import MultiTurnSharedPrefix, SharedPrefixGroups, Synthetic
from kvbench.workload.tokens import order_indices, prefix_token_ids, random_token_ids, sample_count
from kvbench.workload.types import Conversation, Turn, WorkingSet, Workload


def multi_turn_shared_prefix(spec: MultiTurnSharedPrefix, seed: int) -> Workload:
    """Conversation i uses prefix i % prefix_count (balanced); reuse_order only reorders them."""
    rng = np.random.default_rng(seed)
    prefixes = [prefix_token_ids(rng, p, spec.prefix_tokens) for p in range(spec.prefix_count)]
    conversations = []
    for index in range(spec.conversations):
        turns = [_turn(rng, spec.prompt_tokens, spec.output_tokens) for _ in range(spec.turns)]
        group = index % spec.prefix_count
        conversations.append(
            Conversation(
                f"c{index}",
                prefixes[group],
                turns,
                prefix_group=group,
                think_time_s=spec.think_time_s,
            )
        )
    ordered = _reorder(rng, conversations, spec.reuse_order)
    return Workload("multi_turn_shared_prefix", ordered, working_set_of(ordered))


def synthetic(spec: Synthetic, seed: int) -> Workload:
    """Independent single-turn requests; with shared_prefix_tokens > 0 all share one prefix (group 0)."""
    rng = np.random.default_rng(seed)
    prefix = prefix_token_ids(rng, 0, spec.shared_prefix_tokens)
    group = 0 if prefix else None
    conversations = [
        Conversation(
            f"r{index}",
            prefix,
            [_turn(rng, spec.prompt_tokens, spec.output_tokens)],
            prefix_group=group,
        )
        for index in range(spec.requests)
    ]
    return Workload("synthetic", conversations, working_set_of(conversations))


def shared_prefix_groups(spec: SharedPrefixGroups, seed: int) -> Workload:
    """inference-perf `shared_prefix`: num_groups system prompts x num_prompts_per_group questions."""
    rng = np.random.default_rng(seed)
    prompts = [prefix_token_ids(rng, g, spec.system_prompt_len) for g in range(spec.num_groups)]
    conversations = []
    for group in range(spec.num_groups):
        for index in range(spec.num_prompts_per_group):
            turn = Turn(random_token_ids(rng, spec.question_len), spec.output_len)
            conversations.append(
                Conversation(f"g{group}p{index}", prompts[group], [turn], prefix_group=group)
            )
    ordered = _reorder(rng, conversations, spec.reuse_order)
    return Workload("shared_prefix_groups", ordered, working_set_of(ordered))


def working_set_of(conversations: list[Conversation]) -> WorkingSet:
    """Distinct prefixes counted once (by group, or by content when ungrouped) + all history tokens."""
    seen: set = set()
    unique_prefix = 0
    history = 0
    for conv in conversations:
        key = conv.prefix_group if conv.prefix_group is not None else conv.prefix_token_ids
        if key not in seen:
            seen.add(key)
            unique_prefix += _prefix_len(conv)
        history += sum(_question_len(t) + t.output_tokens for t in conv.turns)
    return WorkingSet(unique_prefix, history)


def _prefix_len(conv: Conversation) -> int:
    if conv.prefix_token_ids:
        return len(conv.prefix_token_ids)
    return _text_tokens_estimate(conv.prefix_text)


def _question_len(turn: Turn) -> int:
    return len(turn.question_token_ids) or _text_tokens_estimate(turn.question_text)


def _text_tokens_estimate(text: str | None) -> int:
    """~4 characters per token (English BPE); only for sizing text replays, never for records."""
    return 0 if not text else max(1, round(len(text) / 4))


def _turn(rng: np.random.Generator, prompt_spec, output_spec) -> Turn:
    question = random_token_ids(rng, sample_count(rng, prompt_spec))
    return Turn(question, sample_count(rng, output_spec))


def _reorder(
    rng: np.random.Generator, conversations: list[Conversation], order: str
) -> list[Conversation]:
    positions = order_indices(rng, [c.prefix_group for c in conversations], order)
    return [conversations[i] for i in positions]
