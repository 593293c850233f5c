"""The emulated engine's OpenAI HTTP front against the real engine, over real HTTP."""

from __future__ import annotations

import asyncio

from emu_api_helpers import read_sse, running_engine, tiny_args

PROMPT_64 = list(range(100, 164))  # 4 full 16-token blocks


async def _complete(session, **body):
    body.setdefault("model", "tiny")
    async with session.post("/v1/completions", json=body) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def test_streaming_completion_shape_usage_chunk_and_headers():
    async with running_engine(tiny_args()) as (handle, session):
        body = {
            "model": "tiny",
            "prompt": PROMPT_64,
            "max_tokens": 5,
            "stream": True,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
        }
        async with session.post("/v1/completions", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["x-kvbench-kv-hits"] == "gpu=0,cpu=0,remote=0"
            assert resp.headers["x-kvbench-endpoint"] == f"127.0.0.1:{handle.port}"
            events = await read_sse(resp)
    assert events[-1] == "[DONE]"
    usage_chunk, token_chunks = events[-2], events[:-2]
    assert usage_chunk["choices"] == []
    assert (
        usage_chunk["usage"]["prompt_tokens"] == 64
        and usage_chunk["usage"]["completion_tokens"] == 5
    )
    assert usage_chunk["usage"]["total_tokens"] == 69
    assert "prompt_tokens_details" not in usage_chunk["usage"]  # not without the flag, as vLLM
    assert usage_chunk["usage"]["kvbench"] == {
        "gpu_hit_tokens": 0,
        "cpu_hit_tokens": 0,
        "remote_hit_tokens": 0,
    }
    ids = {c["id"] for c in events[:-1]}
    assert len(ids) == 1 and ids.pop().startswith("cmpl-")
    for chunk in token_chunks:
        assert chunk["object"] == "text_completion" and chunk["model"] == "tiny"
        assert isinstance(chunk["created"], int)
        choice = chunk["choices"][0]
        assert set(choice) == {
            "index",
            "text",
            "logprobs",
            "finish_reason",
            "stop_reason",
            "prompt_token_ids",
            "token_ids",
        }
        assert choice["index"] == 0 and choice["logprobs"] is None and choice["text"]
    assert [c["choices"][0]["finish_reason"] for c in token_chunks] == [None] * (
        len(token_chunks) - 1
    ) + ["length"]
    assert token_chunks[0]["choices"][0]["prompt_token_ids"] == PROMPT_64
    assert all(c["choices"][0]["prompt_token_ids"] is None for c in token_chunks[1:])
    assert sum(len(c["choices"][0]["token_ids"]) for c in token_chunks) == 5


async def test_cached_tokens_only_with_prompt_tokens_details_and_equal_to_the_hit():
    async with running_engine(tiny_args(enable_prompt_tokens_details=True)) as (_, session):
        _, _, first = await _complete(session, prompt=PROMPT_64, max_tokens=2)
        status, headers, second = await _complete(session, prompt=PROMPT_64, max_tokens=2)
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    # 64 tokens = 4 blocks; the last block is always recomputed, so 3 blocks hit
    assert status == 200 and second["usage"]["prompt_tokens_details"] == {"cached_tokens": 48}
    assert headers["x-kvbench-kv-hits"] == "gpu=48,cpu=0,remote=0"
    assert second["usage"]["kvbench"]["gpu_hit_tokens"] == 48
    async with running_engine(tiny_args()) as (_, session):
        await _complete(session, prompt=PROMPT_64, max_tokens=2)
        _, headers, plain = await _complete(session, prompt=PROMPT_64, max_tokens=2)
    assert plain["usage"]["prompt_tokens_details"] is None
    assert headers["x-kvbench-kv-hits"] == "gpu=48,cpu=0,remote=0"


async def test_non_streaming_return_token_ids_and_text_prompt():
    async with running_engine(tiny_args()) as (_, session):
        status, _, body = await _complete(
            session, prompt=[PROMPT_64[:20]], max_tokens=4, return_token_ids=True
        )
        assert status == 200 and body["object"] == "text_completion"
        choice = body["choices"][0]
        assert choice["prompt_token_ids"] == PROMPT_64[:20] and len(choice["token_ids"]) == 4
        assert choice["finish_reason"] == "length" and choice["text"]
        status, _, text_body = await _complete(session, prompt="Hello there, world!", max_tokens=3)
        assert status == 200 and text_body["usage"]["prompt_tokens"] == 5  # Hello| there|,| world|!
        assert text_body["choices"][0]["token_ids"] is None


async def test_chat_completion_stream_and_non_stream():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    async with running_engine(tiny_args()) as (_, session):
        async with session.post(
            "/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 3}
        ) as resp:
            body = await resp.json()
        assert (
            resp.status == 200
            and body["object"] == "chat.completion"
            and body["id"].startswith("chatcmpl-")
        )
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert (
            body["usage"]["completion_tokens"] == 3
            and body["choices"][0]["finish_reason"] == "length"
        )
        # ChatML: <|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n
        assert body["usage"]["prompt_tokens"] == 18
        async with session.post(
            "/v1/chat/completions",
            json={"messages": messages, "max_completion_tokens": 3, "stream": True},
        ) as resp:
            events = await read_sse(resp)
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    chunks = events[1:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len(chunks) == 3 and all(c["choices"][0]["delta"]["content"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


BAD_REQUESTS = [  # vLLM 0.32: request-model validation errors name `body.FIELD`
    (b"{not json", 400, "body.1"),  # pydantic's location: the character offset
    (b'{"model": "tiny", "max_tokens": 3}', 400, "prompt"),
    (b'{"model": "tiny", "prompt": [1, 2], "max_tokens": 0}', 400, "max_tokens"),
    (b'{"model": "tiny", "prompt": [1, 2], "max_tokens": 511}', 400, "max_tokens"),
    (b'{"model": "tiny", "prompt": [1, 2], "max_tokens": "many"}', 400, "body.max_tokens"),
    (b'{"model": "other", "prompt": [1, 2]}', 404, "model"),
    (
        b'{"model": "tiny", "prompt": [1, 2], "stream_options": {"include_usage": true}}',
        400,
        "stream_options",
    ),
]


async def test_bad_requests_get_openai_errors_and_the_server_keeps_serving():
    too_long = {"model": "tiny", "prompt": list(range(600)), "max_tokens": 1}
    async with running_engine(tiny_args()) as (_, session):
        for raw, status, param in BAD_REQUESTS:
            async with session.post(
                "/v1/completions", data=raw, headers={"Content-Type": "application/json"}
            ) as resp:
                body = await resp.json()
            assert resp.status == status, raw
            assert set(body["error"]) == {"message", "type", "param", "code"}
            assert body["error"]["code"] == status and body["error"]["param"] == param
            assert body["error"]["type"] == (
                "NotFoundError"
                if status == 404
                else "Bad Request"
                if param.startswith("body")
                else "BadRequestError"
            )
        async with session.post("/v1/completions", json=too_long) as resp:
            body = await resp.json()
        assert (
            resp.status == 400
            and "maximum context length is 512 tokens" in body["error"]["message"]
        )
        status, _, ok = await _complete(session, prompt=[1, 2, 3], max_tokens=2)
    assert status == 200 and ok["usage"]["completion_tokens"] == 2


async def test_client_disconnect_aborts_the_engine_request():
    async with running_engine(tiny_args()) as (handle, session):
        body = {"model": "tiny", "prompt": PROMPT_64, "max_tokens": 400, "stream": True}
        async with session.post("/v1/completions", json=body) as resp:
            await resp.content.readline()  # the first chunk arrived: the request is running
            assert handle.server.engine.stats().num_requests_running == 1
            resp.close()  # client goes away mid-stream
        for _ in range(200):  # bounded wait for the server to notice (no timing asserted)
            if handle.server.engine.stats().num_requests_running == 0:
                break
            await asyncio.sleep(0.01)
        stats = handle.server.engine.stats()
        assert stats.num_requests_running == 0 and stats.num_requests_waiting == 0
        assert stats.kv_cache_usage_perc == 0.0  # its blocks were freed
        assert stats.generation_tokens < 400


async def test_models_health_version_and_reset_prefix_cache():
    async with running_engine(tiny_args(enable_prompt_tokens_details=True)) as (_, session):
        async with session.get("/v1/models") as resp:
            models = await resp.json()
        assert models["data"][0]["id"] == "tiny" and models["data"][0]["max_model_len"] == 512
        async with session.get("/health") as resp:
            assert resp.status == 200
        async with session.get("/version") as resp:
            assert (await resp.json())["version"]
        await _complete(session, prompt=PROMPT_64, max_tokens=1)
        async with session.post("/reset_prefix_cache") as resp:
            assert resp.status == 200
        _, headers, body = await _complete(session, prompt=PROMPT_64, max_tokens=1)
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert headers["x-kvbench-kv-hits"] == "gpu=0,cpu=0,remote=0"
