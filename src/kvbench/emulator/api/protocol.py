"""OpenAI request validation for the emulated engine, with vLLM's rules and error shape.

Errors are `{"error": {"message", "type", "param", "code"}}` with 400 `BadRequestError` or 404
`NotFoundError`, as vLLM's OpenAI server sends them (0.11 .. 0.32); a bad body never gives a 500.

What is modelled: text, token-id and batched prompts (completions), chat messages rendered with the
tokenizer's chat template, `n`, `echo` (completions), `logprobs` / `top_logprobs`, `max_tokens` /
`max_completion_tokens`, `min_tokens`, `ignore_eos`, `seed`, `stream` with `stream_options`
(`include_usage`, `continuous_usage_stats`), `return_token_ids`, `truncate_prompt_tokens`,
`cache_salt`, `kv_transfer_params`, `chat_template_kwargs`, `add_generation_prompt`,
`add_special_tokens`.
Sampling knobs that change which tokens a model picks but never how many or how fast
(`temperature`, `top_p`, `top_k`, `min_p`, penalties, `logit_bias`) are range-checked as vLLM does
and accepted: the emulator's tokens are synthetic either way. Anything else that would change the
output (stop strings, beam search, structured outputs, tools, prompt logprobs, priorities ...) is
refused with a 400 naming the parameter (`UNMODELLED`), never silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

MAX_LOGPROBS = 20  # vLLM's default --max-logprobs


class ApiError(Exception):
    """A refused request. vLLM 0.32's two shapes: a value error (`type` BadRequestError, the
    message suffixed "(parameter=NAME, value=V)" when a parameter is named) and a request-model
    validation error (`validation=True`: `type` "Bad Request", `param` "body.NAME")."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        param: str | None = None,
        value: Any = None,
        validation: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.value = value
        self.validation = validation

    def payload(self) -> dict[str, Any]:
        message, param = str(self), self.param
        if self.validation:
            err_type = "Bad Request"
            param = f"body.{param}" if param else "body"
        else:
            err_type = "NotFoundError" if self.status == 404 else "BadRequestError"
            if param and self.status == 400:
                shown = "" if self.value is None else f", value={self.value}"
                message = f"{message} (parameter={param}{shown})"
        return {
            "error": {"message": message, "type": err_type, "param": param, "code": self.status}
        }

    def body(self) -> bytes:
        return orjson.dumps(self.payload())


@dataclass(slots=True)
class PromptInput:
    """One prompt of a request: its token ids and, for echo, its text."""

    token_ids: list[int]
    text: str | None  # None for a token-id prompt (echo decodes the ids)
    max_tokens: int


@dataclass(slots=True)
class GenerationParams:
    """A validated request, ready for the engine: len(prompts) x n choices."""

    chat: bool
    prompts: list[PromptInput]
    n: int
    min_tokens: int
    ignore_eos: bool
    stream: bool
    include_usage: bool
    continuous_usage_stats: bool
    return_token_ids: bool
    echo: bool
    num_logprobs: int | None  # None: no logprobs; k: the sampled token's plus k alternatives
    seed: int
    cache_salt: str | None
    kv_transfer_params: dict | None


@dataclass(slots=True)
class ChatInput:
    """Validated chat messages and template arguments, before rendering."""

    messages: list[dict[str, Any]]
    template_kwargs: dict[str, Any]


def parse_body(raw: bytes) -> dict:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ApiError(  # pydantic's location: the character offset
            f"JSON decode error: {err}", param=str(err.pos), validation=True
        ) from None
    if not isinstance(body, dict):
        raise ApiError("Input should be a valid dictionary", validation=True)
    return body


def check_model(body: dict, served_names: tuple[str, ...]) -> None:
    model = body.get("model")
    if model is not None and model not in served_names:
        raise ApiError(f"The model `{model}` does not exist.", status=404, param="model")


# ---- typed fields (pydantic's lax-mode coercions, as vLLM's request models apply them) ----

_TRUE_TEXT = {"1", "on", "t", "true", "y", "yes"}
_FALSE_TEXT = {"0", "off", "f", "false", "n", "no"}


def bool_field(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE_TEXT | _FALSE_TEXT:
        return value.lower() in _TRUE_TEXT
    raise ApiError(
        f"Input should be a valid boolean, unable to interpret input: {value!r}",
        param=name,
        validation=True,
    )


def int_field(body: dict, name: str, default: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(f"Input should be a valid integer: {value!r}", param=name, validation=True)
    return value


def _number_field(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(f"Input should be a valid number: {value!r}", param=name, validation=True)
    if not low <= value <= high:
        raise ApiError(
            f"{name} must be in [{low:g}, {high:g}], got {value}.", param=name, value=value
        )


def _set(value: Any) -> bool:
    return value not in (None, False, [], {}, "", 0)


def _tool_choice_set(value: Any) -> bool:
    return value not in (None, "none", "auto")


def _response_format_set(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("type") not in (None, "text")
        or (value is not None and not isinstance(value, dict))
    )


def _best_of_set(value: Any) -> bool:
    return value is not None and value != 1


UNMODELLED: dict[str, Callable[[Any], bool]] = {
    "stop": _set,
    "stop_token_ids": _set,
    "bad_words": _set,
    "use_beam_search": _set,
    "best_of": _best_of_set,
    "length_penalty": lambda v: v not in (None, 1, 1.0),
    "prompt_logprobs": lambda v: v is not None,
    "allowed_token_ids": lambda v: v is not None,
    "logits_processors": _set,
    "response_format": _response_format_set,
    "structured_outputs": _set,
    "guided_json": _set,
    "guided_regex": _set,
    "guided_choice": _set,
    "guided_grammar": _set,
    "guided_decoding_backend": _set,
    "tools": _set,
    "tool_choice": _tool_choice_set,
    "functions": _set,
    "continue_final_message": _set,
    "suffix": _set,
    "prompt_embeds": _set,
    "priority": _set,
    "documents": _set,
    "audio": _set,
    "modalities": lambda v: v not in (None, ["text"]),
    "return_tokens_as_token_ids": _set,
}


def _refuse_unmodelled(body: dict) -> None:
    for name, is_set in UNMODELLED.items():
        if name in body and is_set(body[name]):
            raise ApiError(
                f"`{name}` is not supported by the emulated engine (it does not model it).",
                param=name,
            )


def _check_sampling(body: dict) -> None:
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and temperature < 0:  # vLLM's own wording
        raise ApiError(
            f"temperature must be non-negative, got {float(temperature)}.",
            param="temperature",
            value=float(temperature),
        )
    _number_field(body, "temperature", 0.0, 1e6)
    _number_field(body, "top_p", 1e-9, 1.0)
    _number_field(body, "min_p", 0.0, 1.0)
    _number_field(body, "presence_penalty", -2.0, 2.0)
    _number_field(body, "frequency_penalty", -2.0, 2.0)
    _number_field(body, "repetition_penalty", 1e-9, 1e6)
    top_k = int_field(body, "top_k", None)
    if top_k is not None and top_k < -1:
        raise ApiError(f"`top_k` must be -1 (disable) or at least 1, got {top_k}.", param="top_k")
    bias = body.get("logit_bias")
    if bias is not None and not isinstance(bias, dict):
        raise ApiError("`logit_bias` must be an object of token id -> bias.", param="logit_bias")


# ---- prompts ----


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def completion_prompts(body: dict) -> list[str | list[int]]:
    """The prompts of a completion request: a string, token ids, or a list of either."""
    prompt = body.get("prompt")
    if prompt is None or prompt == "" or prompt == []:
        raise ApiError(
            "Either prompt or prompt_embeds must be provided and non-empty.", param="prompt"
        )
    if isinstance(prompt, str) or _is_token_list(prompt):
        return [prompt]
    if isinstance(prompt, list) and all(isinstance(p, str) or _is_token_list(p) for p in prompt):
        if any(p == "" or p == [] for p in prompt):
            raise ApiError("Every prompt of a batch must be non-empty.", param="prompt")
        return list(prompt)
    raise ApiError(
        "`prompt` must be a string, a list of token ids, or a list of strings or token-id lists.",
        param="prompt",
    )


def check_token_ids(token_ids: list[int], max_token_id: int) -> None:
    """vLLM: a prompt id above the vocabulary is refused (as is a negative one)."""
    if not token_ids:
        return
    highest, lowest = max(token_ids), min(token_ids)
    if highest > max_token_id:
        raise ApiError(f"Token id {highest} is out of vocabulary")  # as vLLM: no param
    if lowest < 0:
        raise ApiError(
            "Input should be greater than or equal to 0",
            param=f"prompt.{token_ids.index(lowest)}",
            value=lowest,
            validation=True,
        )


def _message_text(content: Any, index: int) -> str:
    """A message's content as the string the chat template sees (text parts joined by newlines,
    as vLLM's "string" content format does)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict):
                raise ApiError(
                    f"messages.{index}.content: each part should be a valid dictionary, got "
                    f"{part!r}",
                )
            kind = part.get("type", "text")
            if kind != "text":
                raise ApiError(
                    f"messages[{index}].content: part type {kind!r} is not supported by the "
                    "emulated engine (text parts only).",
                    param="messages",
                )
            if not isinstance(part.get("text"), str):
                raise ApiError(
                    "A text part needs a string `text`",
                    param=f"messages.{index}.content",
                    validation=True,
                )
            texts.append(part["text"])
        return "\n".join(texts)
    raise ApiError(
        "Input should be a valid string or a list of content parts",
        param=f"messages.{index}.content",
        validation=True,
    )


def chat_input(body: dict) -> ChatInput:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("Field required (a non-empty list)", param="messages", validation=True)
    rendered: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(
                "Each message needs a string `role`", param=f"messages.{index}", validation=True
            )
        rendered.append(
            {"role": message["role"], "content": _message_text(message.get("content"), index)}
        )
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ApiError("`chat_template_kwargs` must be an object.", param="chat_template_kwargs")
    kwargs = {**kwargs, "add_generation_prompt": bool_field(body, "add_generation_prompt", True)}
    return ChatInput(rendered, kwargs)


# ---- lengths ----


def max_tokens_for(body: dict, chat: bool, prompt_len: int, max_model_len: int) -> int:
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
    requested = int_field(body, name, None if chat else 16)
    if requested is None:
        return max_model_len - prompt_len
    if requested < 1:
        raise ApiError(
            f"max_tokens must be at least 1, got {requested}.", param=name, value=requested
        )
    if requested > max_model_len:
        raise ApiError(
            f"max_tokens={requested} cannot be greater than max_model_len={max_model_len}. "
            "Please request fewer output tokens.",
            param=name,
            value=requested,
        )
    if requested > max_model_len - prompt_len:
        raise ApiError(
            f"'max_tokens' or 'max_completion_tokens' is too large: {requested}. This model's "
            f"maximum context length is {max_model_len} tokens and your request has "
            f"{prompt_len} input tokens ({requested} > {max_model_len} - {prompt_len}).",
            param=name,
        )
    return requested


def truncate(token_ids: list[int], body: dict) -> list[int]:
    """`truncate_prompt_tokens: k` keeps the last k prompt tokens (vLLM; -1 keeps all)."""
    keep = int_field(body, "truncate_prompt_tokens", None)
    if keep is None or keep == -1:
        return token_ids
    if keep < 1:
        raise ApiError(
            f"truncate_prompt_tokens must be -1 or at least 1, got {keep}.",
            param="truncate_prompt_tokens",
        )
    return token_ids[-keep:]


# ---- the request's options ----


def _num_logprobs(body: dict, chat: bool) -> int | None:
    if chat:
        top = int_field(body, "top_logprobs", None)
        wants = bool_field(body, "logprobs", False)
        if top is not None and top != 0 and not wants:
            raise ApiError(
                "when using `top_logprobs`, `logprobs` must be set to true.", param="top_logprobs"
            )
        requested, name = (top or 0) if wants else None, "top_logprobs"
    else:
        requested, name = int_field(body, "logprobs", None), "logprobs"
    if requested is None:
        return None
    if requested < 0:
        raise ApiError(f"`{name}` must be a non-negative value.", param=name)
    if requested > MAX_LOGPROBS:
        raise ApiError(
            f"Requested sample logprobs of {requested}, which is greater than max allowed: "
            f"{MAX_LOGPROBS}",
            param=name,
            value=requested,
        )
    return requested


def parse_options(body: dict, chat: bool) -> GenerationParams:
    """Everything but the prompts (filled in by the caller once tokenized)."""
    _refuse_unmodelled(body)
    _check_sampling(body)
    stream = bool_field(body, "stream", False)
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise ApiError("`stream_options` must be an object.", param="stream_options")
    if stream_options and not stream:
        raise ApiError(
            "Stream options can only be defined when `stream=True`.", param="stream_options"
        )
    stream_options = stream_options or {}
    include_usage = bool_field(stream_options, "include_usage", False)
    n = int_field(body, "n", 1) or 0
    if n < 1:
        raise ApiError(f"n must be at least 1, got {n}.")  # vLLM names no parameter here
    echo = bool_field(body, "echo", False)
    if echo and chat:
        raise ApiError("`echo` is not supported by the emulated engine for chat.", param="echo")
    kv_params = body.get("kv_transfer_params")
    salt = body.get("cache_salt")
    return GenerationParams(
        chat=chat,
        prompts=[],
        n=n,
        min_tokens=int_field(body, "min_tokens", 0) or 0,
        ignore_eos=bool_field(body, "ignore_eos", False),
        stream=stream,
        include_usage=include_usage,
        continuous_usage_stats=include_usage
        and bool_field(stream_options, "continuous_usage_stats", False),
        return_token_ids=bool_field(body, "return_token_ids", False),
        echo=echo,
        num_logprobs=_num_logprobs(body, chat),
        seed=int_field(body, "seed", 0) or 0,
        cache_salt=salt if isinstance(salt, str) else None,
        kv_transfer_params=kv_params if isinstance(kv_params, dict) else None,
    )


def check_min_tokens(params: GenerationParams) -> None:
    for prompt in params.prompts:
        if not 0 <= params.min_tokens <= prompt.max_tokens:
            raise ApiError(
                f"min_tokens must be in [0, max_tokens={prompt.max_tokens}], got "
                f"{params.min_tokens}.",
                param="min_tokens",
            )
