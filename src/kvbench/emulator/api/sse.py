"""Server-sent-event chunks and full response bodies, shaped like vLLM's.

Hot path: a stream's constant JSON (id, object, created, model) is serialized once into a byte
prefix; each chunk only serializes its text and token ids (orjson).
"""

from __future__ import annotations

import orjson

DONE = b"data: [DONE]\n\n"
_NULL = b"null"


def _json(value) -> bytes:
    return orjson.dumps(value)


class StreamEncoder:
    def __init__(
        self,
        chat: bool,
        response_id: str,
        created: int,
        model: str,
        return_token_ids: bool,
        prompt_token_ids: list[int],
    ) -> None:
        self.chat = chat
        self.return_token_ids = return_token_ids
        head = {
            "id": response_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
        }
        self._head = _json(head)[:-1]  # without the closing brace
        self._prompt_ids = _json(prompt_token_ids) if return_token_ids else _NULL

    def role_chunk(self) -> bytes:
        """Chat only: vLLM's first chunk announces the assistant role with empty content."""
        top = b',"prompt_token_ids":' + self._prompt_ids if self.return_token_ids else b""
        return (
            b"data: "
            + self._head
            + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            b'"logprobs":null,"finish_reason":null}]' + top + b"}\n\n"
        )

    def token_chunk(
        self, text: str, token_ids: list[int], finish_reason: str | None, first: bool
    ) -> bytes:
        fr = _NULL if finish_reason is None else b'"' + finish_reason.encode() + b'"'
        ids = _json(token_ids) if self.return_token_ids else _NULL
        if self.chat:
            tail = b',"token_ids":' + ids if self.return_token_ids else b""
            return (
                b"data: "
                + self._head
                + b',"choices":[{"index":0,"delta":{"content":'
                + _json(text)
                + b'},"logprobs":null,"finish_reason":'
                + fr
                + tail
                + b"}]}\n\n"
            )
        prompt_ids = self._prompt_ids if first else _NULL
        return (
            b"data: "
            + self._head
            + b',"choices":[{"index":0,"text":'
            + _json(text)
            + b',"logprobs":null,"finish_reason":'
            + fr
            + b',"stop_reason":null,"prompt_token_ids":'
            + prompt_ids
            + b',"token_ids":'
            + ids
            + b"}]}\n\n"
        )

    def usage_chunk(self, usage: dict) -> bytes:
        return b"data: " + self._head + b',"choices":[],"usage":' + _json(usage) + b"}\n\n"


def completion_body(
    response_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None,
    prompt_token_ids: list[int] | None,
    token_ids: list[int] | None,
    usage: dict,
) -> bytes:
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": None,
        "token_ids": token_ids,
        "prompt_logprobs": None,
        "prompt_token_ids": prompt_token_ids,
    }
    return _json(
        {
            "id": response_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": usage,
            "kv_transfer_params": None,
        }
    )


def chat_body(
    response_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None,
    prompt_token_ids: list[int] | None,
    token_ids: list[int] | None,
    usage: dict,
) -> bytes:
    message = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": [],
        "reasoning_content": None,
    }
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": None,
        "token_ids": token_ids,
    }
    return _json(
        {
            "id": response_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": usage,
            "prompt_logprobs": None,
            "prompt_token_ids": prompt_token_ids,
            "kv_transfer_params": None,
        }
    )
