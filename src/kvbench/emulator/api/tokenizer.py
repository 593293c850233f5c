"""Tokenizers for text prompts and chat messages.

The emulator needs token ids, not meaning. `BuiltinTokenizer` is deterministic across processes
and runs (no Python `hash()`): text is split into word pieces (a leading space stays with its
word, punctuation stands alone, about 4 characters per token in English as real BPE gives) and
each piece maps to an id by crc32. Equal text gives equal ids, so shared prefixes stay shared.
Generated ids decode to short fixed words, so streamed text is predictable.

`HFTokenizer` loads `tokenizer.json` from a local folder with the optional `tokenizers` package.
Chat messages use a ChatML template (Qwen's) in both cases; the HF tokenizer's own Jinja
template is not evaluated.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Protocol

from kvbench.errors import UserError

_PIECE = re.compile(r" ?[A-Za-z]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9]|\s+")
# Qwen2/3 special-token ids, so ChatML markers get the ids real Qwen uses.
IM_START_ID = 151644
IM_END_ID = 151645
_SPECIAL = {"<|im_start|>": IM_START_ID, "<|im_end|>": IM_END_ID}
_SPECIAL_SPLIT = re.compile(r"(<\|im_start\|>|<\|im_end\|>)")
_FIRST_ORDINARY_ID = 1000
_WORDS = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "on")


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...


def chatml_prompt(messages: list[dict]) -> str:
    """ChatML rendering with the generation prompt, as Qwen's chat template produces it."""
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


class BuiltinTokenizer:
    def __init__(self, vocab_size: int = 151_643) -> None:
        self._num_ordinary = vocab_size - _FIRST_ORDINARY_ID

    def _piece_id(self, piece: str) -> int:
        return _FIRST_ORDINARY_ID + zlib.crc32(piece.encode("utf-8")) % self._num_ordinary

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for segment in _SPECIAL_SPLIT.split(text):
            special = _SPECIAL.get(segment)
            if special is not None:
                ids.append(special)
            elif segment:
                ids.extend(self._piece_id(p) for p in _PIECE.findall(segment))
        return ids

    def decode(self, token_ids: list[int]) -> str:
        return "".join(" " + _WORDS[t % len(_WORDS)] for t in token_ids)


class HFTokenizer:
    """A local Hugging Face `tokenizer.json` (optional dependency: `tokenizers`)."""

    def __init__(self, folder: str) -> None:
        try:
            from tokenizers import Tokenizer as _HFTok  # type: ignore[import-not-found]
        except ImportError:
            raise UserError(
                "--tokenizer: the optional package 'tokenizers' is not installed"
            ) from None
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise UserError(f"--tokenizer: {path} not found")
        self._tok = _HFTok.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, token_ids: list[int]) -> str:
        return self._tok.decode(token_ids)


def load_tokenizer(folder: str | None) -> Tokenizer:
    return HFTokenizer(folder) if folder else BuiltinTokenizer()
