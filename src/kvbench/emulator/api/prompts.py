"""A request's prompts as token ids, tokenized as vLLM's OpenAI server tokenizes them.

Completions: a text prompt is encoded with the tokenizer's special tokens (BOS where the model has
one); a token-id prompt is taken as is and checked against the vocabulary. Chat: the messages are
rendered with the chat template (generation prompt on) and encoded without special tokens. A
request's `add_special_tokens` overrides either default, as in vLLM.
`truncate_prompt_tokens` then keeps the last k tokens; each prompt gets its own max_tokens (vLLM
derives the default from the prompt's length).

Pure CPU work: the server runs it in a worker thread for large bodies so that /health and
/metrics keep answering while a multi-megabyte prompt is tokenized.
"""

from __future__ import annotations

from kvbench.emulator.api import protocol as proto
from kvbench.emulator.api.tokenizer import Tokenizer


def tokenize_prompts(
    body: dict, chat: bool, tokenizer: Tokenizer, max_model_len: int, max_token_id: int
) -> list[proto.PromptInput]:
    if chat:
        chat_input = proto.chat_input(body)
        try:
            text = tokenizer.render_chat(chat_input.messages, chat_input.template_kwargs)
        except ValueError as err:
            raise proto.ApiError(str(err), param="messages") from None
        special = proto.bool_field(body, "add_special_tokens", False)
        prompts: list[tuple[list[int], str | None]] = [(tokenizer.encode(text, special), None)]
    else:
        prompts = []
        special = proto.bool_field(body, "add_special_tokens", True)
        for prompt in proto.completion_prompts(body):
            if isinstance(prompt, str):
                prompts.append((tokenizer.encode(prompt, special), prompt))
            else:
                proto.check_token_ids(prompt, max_token_id)
                prompts.append((list(prompt), None))
    out: list[proto.PromptInput] = []
    for token_ids, prompt_text in prompts:
        kept = proto.truncate(token_ids, body)
        if not kept:
            raise proto.ApiError("The prompt tokenized to no tokens.", param="prompt")
        max_tokens = proto.max_tokens_for(body, chat, len(kept), max_model_len)
        out.append(proto.PromptInput(kept, prompt_text if kept is token_ids else None, max_tokens))
    return out
