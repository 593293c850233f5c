"""The engine server's request front for the simulated client: the prompt ids and max_tokens a
request's body becomes, computed by the emulated server's own code (emulator/api/prompts.py).

Contract (what `kvbench emulate serve` does with the bodies the load generator sends,
loadgen/transport.py `completions_body` / `chat_body`):
- completions: a token-id prompt is taken as is; its max_tokens is checked against max_model_len
  (`protocol.max_tokens_for`, the server's 400 message when the prompt does not fit);
- chat: the messages (system = the conversation's prefix text, then user / assistant turns with the
  answer text the client received) are rendered with the tokenizer's chat template, generation
  prompt on, and encoded without special tokens (`prompts.tokenize_prompts`), so prompt token
  counts and prefix-cache block hashes equal the live server's;
- a refused request raises `ApiError` (the server answers HTTP 400 with its message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvbench.emulator.api import protocol as proto
from kvbench.emulator.api.prompts import tokenize_prompts
from kvbench.emulator.api.tokenizer import IncrementalDecoder, Tokenizer


@dataclass(frozen=True, slots=True)
class ServedPrompt:
    token_ids: list[int]
    max_tokens: int


class PromptFront:
    def __init__(self, tokenizer: Tokenizer, max_model_len: int, max_token_id: int) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.max_token_id = max_token_id

    def completion(self, prompt_ids: list[int], max_tokens: int) -> ServedPrompt:
        body = {"max_tokens": max_tokens}
        return ServedPrompt(
            prompt_ids, proto.max_tokens_for(body, False, len(prompt_ids), self.max_model_len)
        )

    def chat(self, messages: list[dict[str, Any]], max_tokens: int) -> ServedPrompt:
        body = {"messages": messages, "max_tokens": max_tokens}
        (prompt,) = tokenize_prompts(
            body, True, self.tokenizer, self.max_model_len, self.max_token_id
        )
        return ServedPrompt(prompt.token_ids, prompt.max_tokens)

    def decoder(self) -> IncrementalDecoder:
        """The streamed answer text of one response, decoded as the server decodes it."""
        return IncrementalDecoder(self.tokenizer)
