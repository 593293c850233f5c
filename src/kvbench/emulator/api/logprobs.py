"""Synthetic log-probabilities in vLLM's response shapes.

The emulator has no model, so logprobs are plausible, deterministic values: a token's logprob is a
function of (token id, position) in [-4, 0); the sampled token is the most likely one (greedy), and
its k alternatives follow with strictly lower logprobs. Shapes:
- completions: `{"text_offset": [...], "token_logprobs": [...], "tokens": [...],
  "top_logprobs": [{text: logprob}, ...]}`, the sampled token included in each dict; with `echo`
  the prompt's tokens come first, the very first one with `null` logprob and `null` top_logprobs.
- chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
  "bytes"}]}]}`, k entries in `top_logprobs` (the sampled token first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_MASK64 = (1 << 64) - 1
_ALTERNATIVE_STRIDE = 7919  # a prime: alternatives of one token are distinct ids
Decode = Callable[[list[int]], str]


def _mix(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def sampled_logprob(token_id: int, position: int) -> float:
    """In [-4, 0): the sampled token's logprob (position = index in prompt + output)."""
    return -((_mix(token_id * 1_000_003 + position) % 4000) + 1) / 1000.0


def alternatives(
    token_id: int, position: int, count: int, vocab_size: int
) -> list[tuple[int, float]]:
    """`count` entries, the sampled token first, then lower-probability alternative ids."""
    best = sampled_logprob(token_id, position)
    out = [(token_id, best)]
    for rank in range(1, count):
        alt = (token_id + rank * _ALTERNATIVE_STRIDE) % vocab_size
        drop = 0.25 + (_mix(alt + position) % 1000) / 1000.0
        out.append((alt, out[-1][1] - drop))
    return out


@dataclass
class CompletionLogprobs:
    """Accumulates one completion choice's logprobs (text offsets run over the choice's text)."""

    decode: Decode
    num_top: int
    vocab_size: int
    text_offset: list[int] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    _offset_chars: int = 0
    _position: int = 0

    def add_prompt(self, token_ids: list[int]) -> None:
        """Echoed prompt tokens: the first has no logprob (nothing precedes it)."""
        for index, token_id in enumerate(token_ids):
            self._add(token_id, first_of_prompt=index == 0)

    def add_output(self, token_ids: list[int]) -> dict[str, Any]:
        """Add generated tokens; returns the logprobs object of just these (for a stream chunk)."""
        start = len(self.tokens)
        for token_id in token_ids:
            self._add(token_id, first_of_prompt=False)
        return self.slice(start)

    def _add(self, token_id: int, first_of_prompt: bool) -> None:
        text = self.decode([token_id])
        self.text_offset.append(self._offset_chars)
        self.tokens.append(text)
        if first_of_prompt:
            self.token_logprobs.append(None)
            self.top_logprobs.append(None)
        else:
            top = alternatives(token_id, self._position, max(1, self.num_top), self.vocab_size)
            self.token_logprobs.append(top[0][1])
            self.top_logprobs.append({self.decode([t]): lp for t, lp in top})
        self._offset_chars += len(text)
        self._position += 1

    def slice(self, start: int = 0) -> dict[str, Any]:
        return {
            "text_offset": self.text_offset[start:],
            "token_logprobs": self.token_logprobs[start:],
            "tokens": self.tokens[start:],
            "top_logprobs": self.top_logprobs[start:],
        }


def _chat_entry(decode: Decode, token_id: int, logprob: float) -> dict[str, Any]:
    text = decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def chat_logprobs(
    decode: Decode, token_ids: list[int], first_position: int, num_top: int, vocab_size: int
) -> dict[str, Any]:
    """Chat logprobs of generated tokens (positions count from the first generated token)."""
    content = []
    for offset, token_id in enumerate(token_ids):
        top = alternatives(token_id, first_position + offset, max(1, num_top), vocab_size)
        entry = _chat_entry(decode, token_id, top[0][1])
        entry["top_logprobs"] = [_chat_entry(decode, t, lp) for t, lp in top[:num_top]]
        content.append(entry)
    return {"content": content}
