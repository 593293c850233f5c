"""Server-sent-event chunks shaped like vLLM's (key sets per --vllm-compat profile, see
responses.py). A chunk carries one choice (`index`); n > 1 and prompt lists interleave chunks.

Hot path: a stream's constant JSON (id, object, created, model) is serialized once into a byte
prefix; each chunk serializes only its choice and tail (orjson).
"""

from __future__ import annotations

from typing import Any

import orjson

from kvbench.emulator.api.responses import ResponseShape

DONE = b"data: [DONE]\n\n"


class StreamEncoder:
    def __init__(
        self,
        shape: ResponseShape,
        chat: bool,
        response_id: str,
        created: int,
        model: str,
        return_token_ids: bool,
        include_usage: bool,
    ) -> None:
        self.shape = shape
        # vLLM puts the fingerprint on a choice's finish chunk only when no usage chunk follows
        self._finish_fingerprint = None if include_usage else shape.system_fingerprint
        self.chat = chat
        self.return_token_ids = return_token_ids
        head = {
            "id": response_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
        }
        self._head = b"data: " + orjson.dumps(head)[:-1] + b","  # without the closing brace

    def _chunk(self, tail: dict[str, Any]) -> bytes:
        return self._head + orjson.dumps(tail)[1:] + b"\n\n"

    def role_chunk(
        self, index: int, usage: dict[str, Any] | None, prompt_token_ids: list[int] | None
    ) -> bytes:
        """Chat only: vLLM's first chunk of a choice announces the assistant role."""
        tail: dict[str, Any] = {
            "choices": [
                {
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        }
        if usage is not None:
            tail["usage"] = usage
        if self.shape.v032_fields:
            tail["prompt_token_ids"] = prompt_token_ids if self.return_token_ids else None
            tail["prompt_text"] = None
        elif self.return_token_ids:
            tail["prompt_token_ids"] = prompt_token_ids
        return self._chunk(tail)

    def token_chunk(
        self,
        index: int,
        text: str,
        token_ids: list[int],
        finish_reason: str | None,
        logprobs: dict[str, Any] | None,
        usage: dict[str, Any] | None,
        prompt_token_ids: list[int] | None,
    ) -> bytes:
        """One choice's new text. `prompt_token_ids`: set on a completion choice's first chunk
        when the client asked for them (return_token_ids, or echo on 0.32)."""
        ids = token_ids if self.return_token_ids else None
        v032 = self.shape.v032_fields
        choice: dict[str, Any]
        if self.chat:
            choice = {
                "index": index,
                "delta": {"content": text},
                "logprobs": logprobs,
                "finish_reason": finish_reason,
            }
            if finish_reason is not None and v032:
                choice["stop_reason"] = None
            if v032 or self.return_token_ids:
                choice["token_ids"] = ids
        else:
            choice = {
                "index": index,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish_reason,
                "stop_reason": None,
                "prompt_token_ids": prompt_token_ids,
                "token_ids": ids,
            }
        tail: dict[str, Any] = {"choices": [choice]}
        if usage is not None:
            tail["usage"] = usage
        elif finish_reason is not None and self._finish_fingerprint is not None:
            tail["system_fingerprint"] = self._finish_fingerprint
        return self._chunk(tail)

    def usage_chunk(self, usage: dict[str, Any]) -> bytes:
        tail: dict[str, Any] = {"choices": [], "usage": usage}
        if self.shape.system_fingerprint is not None:
            tail["system_fingerprint"] = self.shape.system_fingerprint
        return self._chunk(tail)
