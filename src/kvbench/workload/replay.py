"""Replay conversations from a JSONL file.

Line format (one conversation per line; blank lines are skipped; unknown keys are errors):
```
{"conversation_id": "c1",                       # optional, default "l<line number>"
 "prefix_token_ids": [101, 102, ...],           # or "prefix_text": "You are ...", or neither
 "prefix_group": 3,                             # optional; default: equal prefixes share a group
 "think_time_s": 0.5,                           # optional pause between turns
 "turns": [{"prompt_token_ids": [..], "output_tokens": 64},
           {"prompt": "text question", "output_tokens": 32}]}
```
A turn gives its new question as token ids or as text (not both). `output_tokens` may be left out
when the spec sets `workload.output_tokens`. Conversations keep file order. Any bad line raises a
UserError naming `<file>:<line>` and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kvbench.errors import UserError
from kvbench.spec.experiment import Replay, format_validation_error
from kvbench.workload.tokens import sample_count
from kvbench.workload.types import Conversation, Turn, Workload


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# A token id is an index into the vocabulary: never negative; int32 in every tokenizer and engine.
TokenId = Annotated[int, Field(ge=0, lt=2**31)]


class ReplayTurn(_Strict):
    prompt_token_ids: list[TokenId] | None = Field(default=None, min_length=1)
    prompt: str | None = Field(default=None, min_length=1)
    output_tokens: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_prompt(self) -> ReplayTurn:
        if (self.prompt_token_ids is None) == (self.prompt is None):
            raise ValueError("give exactly one of prompt_token_ids or prompt")
        return self


class ReplayLine(_Strict):
    conversation_id: str | None = None
    prefix_token_ids: list[TokenId] | None = None
    prefix_text: str | None = None
    prefix_group: int | None = Field(default=None, ge=0)
    think_time_s: float = Field(default=0.0, ge=0)
    turns: list[ReplayTurn] = Field(min_length=1)


def load_replay(
    spec: Replay,
    seed: int,
    base_dir: Path | None = None,
    vocab: tuple[str, int] | None = None,
) -> Workload:
    """`vocab` = (model name, vocabulary size): every token id must be below it (vLLM rejects
    prompts with out-of-vocabulary ids with a 400)."""
    path = spec.path if spec.path.is_absolute() or base_dir is None else base_dir / spec.path
    if not path.is_file():
        raise UserError(f"workload.path: no such replay file {path}")
    rng = np.random.default_rng(seed)
    groups: dict[tuple, int] = {}
    conversations = []
    number = 0
    try:
        with path.open(encoding="utf-8") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    line = _parse_line(path, number, raw)
                    if vocab is not None:
                        _check_vocabulary(path, number, line, *vocab)
                    conversations.append(_conversation(path, number, line, spec, rng, groups))
    except UnicodeDecodeError:
        raise UserError(f"{path}:{number + 1}: not UTF-8 text") from None
    except OSError as err:
        raise UserError(f"workload.path: {path}: cannot read ({err.strerror or err})") from None
    if not conversations:
        raise UserError(f"{path}: the replay file holds no conversations")
    from kvbench.workload.generators import working_set_of

    return Workload("replay", conversations, working_set_of(conversations))


def _parse_line(path: Path, number: int, raw: str) -> ReplayLine:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{number}: invalid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}:{number}: each line must be a JSON object")
    try:
        return ReplayLine.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(f"{path}:{number}", err)) from None


def _check_vocabulary(path: Path, number: int, line: ReplayLine, model: str, size: int) -> None:
    fields = [("prefix_token_ids", line.prefix_token_ids or [])]
    fields += [
        (f"turns.{i}.prompt_token_ids", turn.prompt_token_ids or [])
        for i, turn in enumerate(line.turns)
    ]
    for name, ids in fields:
        if ids and max(ids) >= size:
            raise UserError(
                f"{path}:{number}: {name}: token id {max(ids)} is outside the vocabulary of "
                f"{model} (0..{size - 1})"
            )


def _conversation(path, number, line: ReplayLine, spec: Replay, rng, groups: dict) -> Conversation:
    turns = []
    for index, turn in enumerate(line.turns):
        if turn.output_tokens is not None:
            output = turn.output_tokens
        elif spec.output_tokens is not None:
            output = sample_count(rng, spec.output_tokens)
        else:
            raise UserError(
                f"{path}:{number}: turns.{index}.output_tokens: missing, and workload.output_tokens is not set"
            )
        ids = tuple(turn.prompt_token_ids or ())
        turns.append(Turn(ids, output, question_text=turn.prompt))
    prefix_ids = tuple(line.prefix_token_ids or ())
    group = line.prefix_group
    if group is None and (prefix_ids or line.prefix_text):
        group = groups.setdefault((prefix_ids, line.prefix_text), len(groups))
    return Conversation(
        line.conversation_id or f"l{number}",
        prefix_ids,
        turns,
        prefix_group=group,
        prefix_text=line.prefix_text,
        think_time_s=line.think_time_s,
    )
