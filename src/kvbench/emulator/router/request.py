"""What the scheduler knows about one request, parsed once from the OpenAI-style body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class BadRequest(ValueError):
    """The body cannot be routed (answered with HTTP 400)."""


@dataclass
class RouterRequest:
    request_id: str
    model: str
    is_chat: bool
    prompt_text: str | None = None  # completions with a text prompt
    prompt_token_ids: list[int] | None = None  # completions with a token-id prompt
    messages: list[Any] | None = None  # chat
    cache_salt: str = ""

    @property
    def prompt_tokens_estimate(self) -> int:
        if self.prompt_token_ids is not None:
            return len(self.prompt_token_ids)
        return len(self.prompt_text or "") // 4


def parse_request(body: Any, request_id: str, is_chat: bool) -> RouterRequest:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise BadRequest("'model' must be a string")
    salt = body.get("cache_salt") or ""
    request = RouterRequest(
        request_id=request_id, model=model, is_chat=is_chat, cache_salt=str(salt)
    )
    if is_chat:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise BadRequest("'messages' must be a list")
        request.messages = messages
        return request
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        request.prompt_text = prompt
    elif isinstance(prompt, list) and set(map(type, prompt)) <= {
        int
    }:  # exact ints: bools are not token ids
        request.prompt_token_ids = prompt
    else:
        raise BadRequest("'prompt' must be a string or a list of token ids")
    return request
