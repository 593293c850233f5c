"""Drives an OpenAI-compatible server with the `openai` package (run with .venv-vllm's python,
which has openai 3.x); prints one JSON object of what the client saw.

Usage: python openai_client_run.py BASE_URL MODEL
"""

from __future__ import annotations

import json
import sys

from openai import OpenAI


def main(base_url: str, model: str) -> dict:
    client = OpenAI(base_url=base_url + "/v1", api_key="none", max_retries=0)
    seen: dict = {"models": [m.id for m in client.models.list().data]}
    completion = client.completions.create(
        model=model, prompt="the cache block prefix", max_tokens=8, n=2, logprobs=2,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    seen["completion"] = {
        "choices": len(completion.choices),
        "prompt_tokens": completion.usage.prompt_tokens,
        "completion_tokens": completion.usage.completion_tokens,
        "logprob_tokens": [len(c.logprobs.tokens) for c in completion.choices],
        "texts_nonempty": all(c.text for c in completion.choices),
    }
    stream = client.completions.create(
        model=model, prompt=["a b c", "d e f g"], max_tokens=5, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    text_by_index: dict[int, str] = {}
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            text_by_index[choice.index] = text_by_index.get(choice.index, "") + choice.text
        usage = chunk.usage or usage
    seen["completion_stream"] = {
        "indexes": sorted(text_by_index),
        "completion_tokens": usage.completion_tokens if usage else None,
        "prompt_tokens": usage.prompt_tokens if usage else None,
    }
    messages = [{"role": "user", "content": "What does the router score?"}]
    chat = client.chat.completions.create(
        model=model, messages=messages, max_tokens=6, logprobs=True, top_logprobs=2,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    seen["chat"] = {
        "prompt_tokens": chat.usage.prompt_tokens,
        "completion_tokens": chat.usage.completion_tokens,
        "logprob_tokens": len(chat.choices[0].logprobs.content),
        "content": chat.choices[0].message.content,
    }
    chat_stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=6, stream=True, n=2,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    chunks, usage = 0, None
    for chunk in chat_stream:
        chunks += 1
        usage = chunk.usage or usage
    seen["chat_stream"] = {
        "chunks": chunks,
        "completion_tokens": usage.completion_tokens if usage else None,
        "prompt_tokens": usage.prompt_tokens if usage else None,
    }
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
