"""What a workload generator produces and the load generator consumes: conversations of token ids.

Turn k's prompt = prefix + (question_0 + answer_0) + ... + (question_{k-1} + answer_{k-1}) + question_k.
Answers are the server's returned token ids when it gives them (`return_token_ids`), otherwise
client-synthesized ones (and the record says so). The order of `Workload.conversations` is the
reuse order the load generator follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Turn:
    question_token_ids: tuple[int, ...]
    output_tokens: int  # max_tokens asked for (ignore_eos so the server produces exactly this many)
    question_text: str | None = None  # for chat / text prompts


@dataclass(slots=True)
class Conversation:
    conversation_id: str
    prefix_token_ids: tuple[int, ...]
    turns: list[Turn]
    prefix_group: int | None = None  # which shared prefix (None: no shared prefix)
    prefix_text: str | None = None
    think_time_s: float = 0.0  # pause between a turn's answer and the next turn


@dataclass(slots=True)
class WorkingSet:
    """Unique KV the workload touches, in tokens (shared prefixes counted once + all history)."""

    unique_prefix_tokens: int
    history_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.unique_prefix_tokens + self.history_tokens


@dataclass(slots=True)
class Workload:
    kind: str
    conversations: list[Conversation]
    working_set: WorkingSet
    notes: list[str] = field(
        default_factory=list
    )  # e.g. how capacity-aware sizing changed the counts
