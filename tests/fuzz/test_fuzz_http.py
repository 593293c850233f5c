"""Fuzz: random request bodies never break the emulated engine or the router. Every answer is a
200 or a 4xx in vLLM's error shape, never a 5xx; afterwards both still serve a valid request."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import ServingStack, post_json, request
from strategies import VALUES, mutated

COMPLETION = {"model": "tiny", "prompt": "hello there", "max_tokens": 3, "stream": False}
CHAT = {
    "model": "tiny",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ],
    "max_tokens": 3,
    "stream": True,
    "stream_options": {"include_usage": True},
}
TOKENS = {"model": "tiny", "prompt": [1, 2, 3, 4], "max_tokens": 2, "n": 1, "temperature": 0.0}
BODIES = st.one_of(
    st.tuples(st.just("/v1/completions"), mutated(COMPLETION)),
    st.tuples(st.just("/v1/completions"), mutated(TOKENS)),
    st.tuples(st.just("/v1/chat/completions"), mutated(CHAT)),
    st.tuples(st.sampled_from(["/v1/completions", "/v1/chat/completions"]), VALUES),
)
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def stack():
    with ServingStack() as serving:
        yield serving


def assert_answered_well(status: int, body: bytes) -> None:
    assert status < 500, body[:300]
    if status >= 400:
        error = json.loads(body)["error"]  # vLLM's shape: {"error": {"message", "type", "code"}}
        assert isinstance(error["message"], str) and error["code"] == status


def assert_still_serving(port: int) -> None:
    assert request(port, "GET", "/health")[0] == 200
    status, body = post_json(port, "/v1/completions", COMPLETION)
    assert status == 200, body[:300]


@FUZZ
@given(BODIES)
def test_engine_answers_every_body_without_a_5xx(stack, case):
    path, document = case
    assert_answered_well(*post_json(stack.engine_port, path, document))


@FUZZ
@given(BODIES)
def test_router_answers_every_body_without_a_5xx(stack, case):
    path, document = case
    status, body = post_json(stack.router_port, path, document)
    assert status < 500, body[:300]


@settings(FUZZ, max_examples=40)
@given(st.binary(max_size=200))
def test_raw_bytes_are_a_400(stack, raw):
    for port in (stack.engine_port, stack.router_port):
        status, body = request(port, "POST", "/v1/completions", raw)
        assert 400 <= status < 500, body[:300]


def test_both_still_serve_after_the_fuzzing(stack):
    assert_still_serving(stack.engine_port)
    assert_still_serving(stack.router_port)
