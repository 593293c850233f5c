"""Tokenizers for text prompts and chat messages.

The emulator needs token ids, not meaning. Two implementations of `Tokenizer`:

- `HFTokenizer`: a model folder's Hugging Face `tokenizer.json` (the `tokenizers` package) and the
  chat template of its `tokenizer_config.json` / `chat_template.jinja` (rendered with jinja2 the way
  transformers' `apply_chat_template` renders it). Text is tokenized as vLLM's OpenAI server does:
  completions with `add_special_tokens=True` (the tokenizer's post-processor adds BOS where the
  model has one), chat prompts rendered with `add_generation_prompt=True` then tokenized with
  `add_special_tokens=False`. `usage.prompt_tokens` then equals real vLLM's for the same folder.
  `vocab_size` (ordinary tokens, no added specials) bounds the ids the engine generates, so
  generated ids always decode to text.
- `BuiltinTokenizer` (no folder given): deterministic across processes and runs (no Python
  `hash()`): text is split into word pieces (a leading space stays with its word, punctuation stands
  alone, about 4 characters per token in English as real BPE gives) and each piece maps to an id by
  crc32. Equal text gives equal ids, so shared prefixes stay shared. Chat uses a ChatML rendering
  (Qwen's); generated ids decode to short fixed words. Counts differ from a real tokenizer's.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any, Protocol

from kvbench.errors import UserError

_PIECE = re.compile(r" ?[A-Za-z]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9]|\s+")
# Qwen2/3 special-token ids, so ChatML markers get the ids real Qwen uses.
IM_START_ID = 151644
IM_END_ID = 151645
_SPECIAL = {"<|im_start|>": IM_START_ID, "<|im_end|>": IM_END_ID}
_SPECIAL_SPLIT = re.compile(r"(<\|im_start\|>|<\|im_end\|>)")
_FIRST_ORDINARY_ID = 1000
_WORDS = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "on")
_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token")


class Tokenizer(Protocol):
    """What the HTTP front needs from a tokenizer."""

    @property
    def vocab_size(self) -> int | None:
        """Ids the engine may generate are in [0, vocab_size); None: the model catalog's."""
        ...

    @property
    def max_token_id(self) -> int:
        """The highest id the tokenizer knows (added special tokens included)."""
        ...

    def encode(self, text: str, add_special_tokens: bool) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...

    def render_chat(self, messages: list[dict[str, Any]], template_kwargs: dict[str, Any]) -> str:
        """The chat prompt text, generation prompt included."""
        ...


def chatml_prompt(messages: list[dict[str, Any]]) -> str:
    """ChatML rendering with the generation prompt, as Qwen's chat template produces it."""
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


class BuiltinTokenizer:
    def __init__(self, vocab_size: int = 151_643) -> None:
        self._num_ordinary = vocab_size - _FIRST_ORDINARY_ID

    @property
    def vocab_size(self) -> int | None:
        return None

    @property
    def max_token_id(self) -> int:
        return IM_END_ID

    def _piece_id(self, piece: str) -> int:
        return _FIRST_ORDINARY_ID + zlib.crc32(piece.encode("utf-8")) % self._num_ordinary

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
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

    def render_chat(self, messages: list[dict[str, Any]], template_kwargs: dict[str, Any]) -> str:
        return chatml_prompt(messages)


def _token_text(value: Any) -> str | None:
    """A tokenizer_config special token: a string or an AddedToken dict {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str):
        return template
    jinja_file = folder / "chat_template.jinja"
    return jinja_file.read_text() if jinja_file.is_file() else None


class _ChatTemplate:
    """A Jinja chat template compiled the way transformers compiles it (sandboxed, trim_blocks,
    lstrip_blocks, loopcontrols, `tojson` without ASCII escaping, `raise_exception`)."""

    def __init__(self, source: str, special_tokens: dict[str, str]) -> None:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise jinja2.exceptions.TemplateError(message)

        def tojson(value: Any, indent: int | None = None) -> str:
            return json.dumps(value, ensure_ascii=False, indent=indent)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        self._template = env.from_string(source)
        self._special_tokens = special_tokens

    def render(self, messages: list[dict[str, Any]], template_kwargs: dict[str, Any]) -> str:
        import jinja2

        values = {"add_generation_prompt": True, **self._special_tokens, **template_kwargs}
        try:
            return self._template.render(messages=messages, **values)
        except jinja2.exceptions.TemplateError as err:
            raise ValueError(f"the chat template failed: {err}") from None


class HFTokenizer:
    """A local Hugging Face tokenizer folder: tokenizer.json (+ tokenizer_config.json)."""

    def __init__(self, folder: str) -> None:
        from tokenizers import Tokenizer as _RustTokenizer

        root = Path(folder)
        path = root / "tokenizer.json"
        if not path.is_file():
            raise UserError(f"--tokenizer: {path} not found")
        try:
            self._tok = _RustTokenizer.from_file(str(path))
        except Exception as err:  # the Rust side raises plain Exception on a bad file
            raise UserError(f"--tokenizer: {path} is not a tokenizer.json ({err})") from None
        config = _read_json(root / "tokenizer_config.json")
        special = {k: t for k in _SPECIAL_TOKEN_KEYS if (t := _token_text(config.get(k)))}
        source = _read_chat_template(root, config)
        self._chat = _ChatTemplate(source, special) if source else None
        self._vocab_size = self._tok.get_vocab_size(with_added_tokens=False)
        self._max_token_id = self._tok.get_vocab_size(with_added_tokens=True) - 1

    @property
    def vocab_size(self) -> int | None:
        return self._vocab_size

    @property
    def max_token_id(self) -> int:
        return self._max_token_id

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids: list[int]) -> str:
        return self._tok.decode(token_ids, skip_special_tokens=True)

    def render_chat(self, messages: list[dict[str, Any]], template_kwargs: dict[str, Any]) -> str:
        if self._chat is None:  # vLLM refuses chat without a template too
            raise ValueError(
                "the tokenizer has no chat template; chat completions are not available"
            )
        return self._chat.render(messages, template_kwargs)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"--tokenizer: {path} is not valid JSON ({err})") from None
    return value if isinstance(value, dict) else {}


class IncrementalDecoder:
    """Streamed text of one output, decoded the way vLLM's detokenizer does it: each new text piece
    is the decode of a short window minus the decode of its already-sent part, and nothing is sent
    while the window ends in an incomplete UTF-8 sequence (U+FFFD)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        # the built-in tokenizer decodes each id alone: no window needed (the hot path)
        self._stateless = isinstance(tokenizer, BuiltinTokenizer)
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_ids: list[int], final: bool = False) -> str:
        """The new text of `token_ids`; `final` flushes what an incomplete sequence held back."""
        if self._stateless:
            return self._tokenizer.decode(token_ids)
        self._ids.extend(token_ids)
        decode = self._tokenizer.decode
        sent = decode(self._ids[self._prefix_offset : self._read_offset])
        window = decode(self._ids[self._prefix_offset :])
        if len(window) > len(sent) and (final or not window.endswith("\ufffd")):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return window[len(sent) :]
        return ""


def load_tokenizer(folder: str | None) -> Tokenizer:
    return HFTokenizer(folder) if folder else BuiltinTokenizer()
