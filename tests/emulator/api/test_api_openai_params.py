"""OpenAI parameters the emulated engine models as vLLM does (n, prompt lists, echo, logprobs,
continuous usage stats), the ones it refuses by name, and vLLM's validation of bad bodies."""

from __future__ import annotations

import asyncio
import logging

import pytest
from emu_api_helpers import read_sse, running_engine, tiny_args
from emu_api_vllm_capture import TOKENIZER_DIR, vllm032_args

from kvbench.emulator.api.tokenizer import HFTokenizer

PROMPT = [11, 12, 13, 14, 15]


async def _post(session, path="/v1/completions", **body):
    body.setdefault("model", "tiny")
    async with session.post(path, json=body) as resp:
        if resp.content_type == "text/event-stream":
            return resp.status, await read_sse(resp)
        return resp.status, await resp.json()


async def test_n_and_prompt_lists_give_one_choice_per_sample_and_usage_counts_prompts_once():
    async with running_engine(tiny_args()) as (_, session):
        status, body = await _post(session, prompt=[PROMPT, PROMPT[:3]], n=2, max_tokens=4)
    assert status == 200
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["usage"]["prompt_tokens"] == 5 + 3  # each prompt once, not once per sample
    assert body["usage"]["completion_tokens"] == 4 * 4
    texts = [c["text"] for c in body["choices"]]
    assert texts[0] != texts[1]  # the samples of one prompt differ


async def test_streamed_n2_interleaves_choices_each_with_its_finish_and_one_usage_chunk():
    async with running_engine(tiny_args()) as (_, session):
        status, events = await _post(
            session,
            prompt=PROMPT,
            n=2,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    finishes = {c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in chunks}
    assert finishes == {0: "length", 1: "length"}
    assert events[-2]["usage"]["completion_tokens"] == 6 and events[-2]["choices"] == []


async def test_echo_prepends_the_prompt_text_and_logprobs_have_vllm_shape():
    async with running_engine(tiny_args(), tokenizer_dir=str(TOKENIZER_DIR)) as (_, session):
        prompt = "the cache block prefix"
        status, body = await _post(session, prompt=prompt, echo=True, logprobs=2, max_tokens=3)
        assert status == 200
        choice = body["choices"][0]
        assert choice["text"].startswith(prompt) and len(choice["text"]) > len(prompt)
        lp = choice["logprobs"]
        num_prompt = body["usage"]["prompt_tokens"]
        assert len(lp["tokens"]) == num_prompt + 3 == len(lp["token_logprobs"])
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert all(v < 0 for v in lp["token_logprobs"][1:])
        assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][0] == 0
        for token, logprob, top in zip(
            lp["tokens"][1:], lp["token_logprobs"][1:], lp["top_logprobs"][1:], strict=True
        ):
            assert top[token] == logprob and len(top) <= 2
        assert choice["prompt_logprobs"][0] is None and len(choice["prompt_logprobs"]) == num_prompt

        status, chat = await _post(
            session,
            "/v1/chat/completions",
            messages=[{"role": "user", "content": "hi"}],
            logprobs=True,
            top_logprobs=3,
            max_tokens=4,
        )
    assert status == 200
    content = chat["choices"][0]["logprobs"]["content"]
    assert len(content) == 4
    assert all(
        len(e["top_logprobs"]) == 3 and e["top_logprobs"][0]["token"] == e["token"] for e in content
    )
    # a token alone may be part of a UTF-8 sequence (vLLM shows it as U+FFFD too)
    assert all(bytes(e["bytes"]) == e["token"].encode() for e in content)


async def test_continuous_usage_stats_count_up_per_chunk():
    async with running_engine(tiny_args()) as (_, session):
        status, events = await _post(
            session,
            prompt=PROMPT,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
        )
    assert status == 200
    token_chunks = [e for e in events[:-1] if e["choices"]]
    counts = [e["usage"]["completion_tokens"] for e in token_chunks]
    assert counts == sorted(counts) and counts[-1] == 4
    assert all(e["usage"]["prompt_tokens"] == 5 for e in token_chunks)


async def test_the_hf_tokenizer_streams_text_and_generates_ids_inside_its_vocabulary():
    vocab = HFTokenizer(str(TOKENIZER_DIR)).vocab_size
    assert vocab == 4096
    async with running_engine(vllm032_args(), tokenizer_dir=str(TOKENIZER_DIR)) as (_, session):
        status, events = await _post(
            session,
            model="tiny-qwen3",
            prompt="the cache",
            max_tokens=24,
            stream=True,
            return_token_ids=True,
        )
    assert status == 200
    chunks = [e["choices"][0] for e in events[:-1]]
    ids = [t for c in chunks for t in c["token_ids"]]
    assert len(ids) == 24 and all(0 <= t < vocab for t in ids)
    text = "".join(c["text"] for c in chunks)
    assert len(text) >= 24  # every generated id decodes to text
    assert text == HFTokenizer(str(TOKENIZER_DIR)).decode(ids)


REFUSED = [
    ("stop", ["\n"]),
    ("stop_token_ids", [2]),
    ("use_beam_search", True),
    ("prompt_logprobs", 1),
    ("response_format", {"type": "json_object"}),
    ("structured_outputs", {"json": {}}),
    ("suffix", "x"),
    ("priority", 3),
    ("return_tokens_as_token_ids", True),
]


@pytest.mark.parametrize(("param", "value"), REFUSED)
async def test_unmodelled_parameters_are_refused_by_name(param, value):
    async with running_engine(tiny_args()) as (_, session):
        status, body = await _post(session, prompt=PROMPT, max_tokens=2, **{param: value})
        assert status == 400 and body["error"]["param"] == param
        assert param in body["error"]["message"]
        # the default value of the same parameter is accepted
        status, _ = await _post(session, prompt=PROMPT, max_tokens=2, **{param: None})
        assert status == 200


async def test_chat_tools_are_refused_by_name():
    tool = {"type": "function", "function": {"name": "f", "parameters": {}}}
    async with running_engine(tiny_args()) as (_, session):
        status, body = await _post(
            session,
            "/v1/chat/completions",
            messages=[{"role": "user", "content": "x"}],
            tools=[tool],
            max_tokens=2,
        )
    assert status == 400 and body["error"]["param"] == "tools"


BAD_BODIES = [
    ("/v1/completions", {"prompt": [1, 10**12]}, None),
    ("/v1/completions", {"prompt": [1, 2**64 - 1]}, None),
    ("/v1/completions", {"prompt": [[1, 2], [151936]]}, None),  # Qwen3's vocab is 151936
    ("/v1/completions", {"prompt": [1, 2], "n": 0}, None),
    ("/v1/completions", {"prompt": [1, 2], "stream": "maybe"}, "body.stream"),
    ("/v1/completions", {"prompt": [1, 2], "stream": 7}, "body.stream"),
    ("/v1/completions", {"prompt": [1, 2], "logprobs": 21}, "logprobs"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [1, None, {"text": 5}]}]},
        None,
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"text": 5}]}]},
        "body.messages.0.content",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": 5}]},
        "body.messages.0.content",
    ),
    ("/v1/chat/completions", {"messages": [{"content": "x"}]}, "body.messages.0"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
        "top_logprobs",
    ),
]


async def test_bad_bodies_get_400_in_vllm_shape_and_the_server_keeps_serving():
    async with running_engine(tiny_args()) as (_, session):
        for path, body, param in BAD_BODIES:
            status, got = await _post(session, path, max_tokens=2, **body)
            assert status == 400, body
            assert set(got["error"]) == {"message", "type", "param", "code"}
            assert got["error"]["param"] == param, body
        # pydantic's boolean coercion: the string "false" means false (vLLM does not stream it)
        status, got = await _post(session, prompt=[1, 2], max_tokens=2, stream="false")
        assert status == 200 and got["object"] == "text_completion"
        status, got = await _post(session, prompt=[1, 2], max_tokens=2, stream="true")
        assert status == 200 and got[-1] == "[DONE]"


async def test_a_huge_prompt_is_tokenized_off_the_event_loop():
    """/health answers while a multi-megabyte text prompt is being tokenized."""
    huge = "word " * 800_000  # 4 MB of text
    async with running_engine(tiny_args()) as (_, session):
        completion = asyncio.create_task(_post(session, prompt=huge, max_tokens=1))
        await asyncio.sleep(0.05)  # the body is sent and tokenizing
        async with session.get("/health") as resp:
            assert resp.status == 200
        assert not completion.done()  # health answered while the prompt was still in work
        status, body = await completion
    assert status == 400 and "maximum context length" in body["error"]["message"]


async def test_a_client_disconnect_logs_one_debug_line_and_no_error(caplog):
    caplog.set_level(logging.DEBUG)
    async with running_engine(tiny_args()) as (_, session):
        body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 300, "stream": True}
        async with session.post("/v1/completions", json=body) as resp:
            await resp.content.readline()
            resp.close()
        await asyncio.sleep(0.3)
        status, _ = await _post(session, prompt=PROMPT, max_tokens=2)
    assert status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    lines = [r for r in caplog.records if "client went away" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
