"""OpenAI request validation and vLLM-shaped responses for the emulated engine.

Request rules and error texts follow vLLM's OpenAI server (0.11 .. 0.32): errors are
`{"error": {"message", "type", "param", "code"}}` with 400 `BadRequestError` or 404 `NotFoundError`.
Response shapes follow vLLM's pydantic models: streamed chunks are dumped with `exclude_unset`
(so a choice always carries `logprobs`, `finish_reason`, `stop_reason`, `prompt_token_ids`,
`token_ids`, null when unused), the final usage chunk with `exclude_none`.

kvbench additions: `usage.kvbench = {gpu_hit_tokens, cpu_hit_tokens, remote_hit_tokens}`.
Known gap: one prompt per request (vLLM also takes a batch of prompts); `n` must be 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from kvbench.emulator.api.tokenizer import Tokenizer, chatml_prompt
from kvbench.emulator.engine.interface import TierHits


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param

    def body(self) -> bytes:
        err_type = "NotFoundError" if self.status == 404 else "BadRequestError"
        return orjson.dumps(
            {
                "error": {
                    "message": str(self),
                    "type": err_type,
                    "param": self.param,
                    "code": self.status,
                }
            }
        )


@dataclass(slots=True)
class GenerationParams:
    """A validated request, ready for the engine."""

    chat: bool
    prompt_token_ids: list[int]
    max_tokens: int
    min_tokens: int
    ignore_eos: bool
    stream: bool
    include_usage: bool
    return_token_ids: bool
    seed: int
    cache_salt: str | None
    kv_transfer_params: dict | None


def parse_body(raw: bytes) -> dict:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ApiError(f"Invalid JSON body: {err}") from None
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.")
    return body


def check_model(body: dict, served_names: tuple[str, ...]) -> None:
    model = body.get("model")
    if model is not None and model not in served_names:
        raise ApiError(f"The model `{model}` does not exist.", status=404, param="model")


def _int_field(body: dict, name: str, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(f"`{name}` must be an integer.", param=name)
    return value


def _completion_prompt(body: dict, tokenizer: Tokenizer) -> list[int]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one prompt
    if prompt is None or prompt == "" or prompt == []:
        raise ApiError(
            "Either prompt or prompt_embeds must be provided and non-empty.", param="prompt"
        )
    if isinstance(prompt, str):
        return tokenizer.encode(prompt)
    if isinstance(prompt, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in prompt
    ):
        if any(t < 0 for t in prompt):
            raise ApiError("Token ids in `prompt` must be >= 0.", param="prompt")
        return list(prompt)
    raise ApiError(
        "`prompt` must be a string, a list of token ids, or a list of one of those "
        "(this emulator serves one prompt per request).",
        param="prompt",
    )


def _chat_prompt(body: dict, tokenizer: Tokenizer) -> list[int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("`messages` must be a non-empty list.", param="messages")
    rendered = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError("Each message needs a string `role`.", param="messages")
        content = m.get("content", "")
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ApiError(
                "Message `content` must be a string or a list of text parts.", param="messages"
            )
        rendered.append({"role": m["role"], "content": content})
    return tokenizer.encode(chatml_prompt(rendered))


def _max_tokens(body: dict, chat: bool, prompt_len: int, max_model_len: int) -> int:
    if prompt_len >= max_model_len:
        raise ApiError(
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {prompt_len} input tokens. Please reduce the length of the input "
            "messages.",
            param="input_tokens",
        )
    name = (
        "max_completion_tokens"
        if chat and body.get("max_completion_tokens") is not None
        else "max_tokens"
    )
    requested = _int_field(body, name, None if chat else 16)
    if requested is None:
        return max_model_len - prompt_len
    if requested < 1:
        raise ApiError(f"max_tokens must be at least 1, got {requested}.", param=name)
    if requested > max_model_len - prompt_len:
        raise ApiError(
            f"'max_tokens' or 'max_completion_tokens' is too large: {requested}. This model's "
            f"maximum context length is {max_model_len} tokens and your request has "
            f"{prompt_len} input tokens ({requested} > {max_model_len} - {prompt_len}).",
            param=name,
        )
    return requested


def parse_generation(
    body: dict, chat: bool, tokenizer: Tokenizer, max_model_len: int
) -> GenerationParams:
    stream = bool(body.get("stream", False))
    stream_options = body.get("stream_options")
    if stream_options and not stream:
        raise ApiError(
            "Stream options can only be defined when `stream=True`.", param="stream_options"
        )
    if (_int_field(body, "n", 1) or 1) != 1:
        raise ApiError("This emulator serves n=1 only.", param="n")
    prompt_ids = _chat_prompt(body, tokenizer) if chat else _completion_prompt(body, tokenizer)
    max_tokens = _max_tokens(body, chat, len(prompt_ids), max_model_len)
    min_tokens = _int_field(body, "min_tokens", 0) or 0
    if not 0 <= min_tokens <= max_tokens:
        raise ApiError(
            f"min_tokens must be in [0, max_tokens={max_tokens}], got {min_tokens}.",
            param="min_tokens",
        )
    kv_params = body.get("kv_transfer_params")
    return GenerationParams(
        chat=chat,
        prompt_token_ids=prompt_ids,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        ignore_eos=bool(body.get("ignore_eos", False)),
        stream=stream,
        include_usage=bool(
            isinstance(stream_options, dict) and stream_options.get("include_usage")
        ),
        return_token_ids=bool(body.get("return_token_ids", False)),
        seed=_int_field(body, "seed", 0) or 0,
        cache_salt=body.get("cache_salt") if isinstance(body.get("cache_salt"), str) else None,
        kv_transfer_params=kv_params if isinstance(kv_params, dict) else None,
    )


def hits_header(hits: TierHits) -> str:
    return f"gpu={hits.gpu_tokens},cpu={hits.cpu_tokens},remote={hits.remote_tokens}"


def usage(
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    hits: TierHits,
    prompt_tokens_details: bool,
    include_null_details: bool,
) -> dict:
    out: dict = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    if prompt_tokens_details:
        out["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    elif include_null_details:
        out["prompt_tokens_details"] = None
    out["kvbench"] = {
        "gpu_hit_tokens": hits.gpu_tokens,
        "cpu_hit_tokens": hits.cpu_tokens,
        "remote_hit_tokens": hits.remote_tokens,
    }
    return out
