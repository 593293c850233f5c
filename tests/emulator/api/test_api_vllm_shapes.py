"""The emulated engine with --vllm-compat 0.32 against real vLLM 0.32's captured responses.

Every captured request (tests/fixtures/vllm-0.32-cpu-responses.json, scripts/capture-vllm-
responses.py) is replayed against an emulated engine configured like the captured server (same
tokenizer folder): non-streamed bodies must have real vLLM's key structure field for field,
streams the same set of chunk structures, refusals the same status / error type / parameter, and
`usage.prompt_tokens` must equal real vLLM's (the same tokenizer and chat template).
"""

from __future__ import annotations

import pytest
from emu_api_helpers import read_sse, running_engine
from emu_api_vllm_capture import (
    TOKENIZER_DIR,
    CapturedCase,
    captured_cases,
    chunk_shapes,
    key_shape,
    vllm032_args,
)

CASES = captured_cases()


async def _replay(session, case: CapturedCase):
    if case.path == "/v1/models":
        async with session.get(case.path) as resp:
            return resp.status, await resp.json()
    data = b"{not json" if case.body is None else None
    async with session.post(case.path, json=case.body, data=data) as resp:
        if case.events is not None and resp.status == 200:
            return resp.status, await read_sse(resp)
        return resp.status, await resp.json()


@pytest.fixture
async def twin():
    async with running_engine(vllm032_args(), tokenizer_dir=str(TOKENIZER_DIR)) as (_, session):
        yield session


def test_the_capture_covers_streams_bodies_and_refusals():
    kinds = {
        "stream": [c for c in CASES if c.events],
        "body": [c for c in CASES if c.status == 200 and c.response is not None],
        "refusal": [c for c in CASES if c.status >= 400],
    }
    assert len(kinds["stream"]) >= 6 and len(kinds["body"]) >= 10 and len(kinds["refusal"]) >= 10


@pytest.mark.parametrize("case", [c for c in CASES if c.status == 200], ids=lambda c: c.name)
async def test_success_shapes_match_real_vllm(twin, case: CapturedCase):
    status, got = await _replay(twin, case)
    assert status == 200
    if case.events is not None:
        assert got[-1] == "[DONE]"
        assert chunk_shapes(got) == chunk_shapes(case.events)
        return
    assert key_shape(got) == key_shape(case.response)
    if "usage" in case.response:
        assert got["usage"]["prompt_tokens"] == case.response["usage"]["prompt_tokens"]
        assert len(got["choices"]) == len(case.response["choices"])
        assert [c["index"] for c in got["choices"]] == [
            c["index"] for c in case.response["choices"]
        ]


@pytest.mark.parametrize("case", [c for c in CASES if c.status >= 400], ids=lambda c: c.name)
async def test_refusals_match_real_vllm(twin, case: CapturedCase):
    status, got = await _replay(twin, case)
    real = case.response["error"]
    assert status == case.status
    assert set(got) == {"error"} and set(got["error"]) == set(real)
    assert got["error"]["type"] == real["type"] and got["error"]["code"] == real["code"]
    if real["param"] is None or got["error"]["param"] is None:
        assert got["error"]["param"] == real["param"]
    else:  # pydantic's location path beyond the field is its own (union member names)
        assert got["error"]["param"].split(".")[:2] == real["param"].split(".")[:2]
