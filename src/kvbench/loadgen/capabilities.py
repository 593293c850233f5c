"""Learn once what the server accepts: `return_token_ids` (vLLM >= 0.10.2) and `min_tokens`.

With returned ids the client counts the tokens of every chunk exactly (completions and chat) and,
for completions, builds the next turn's history from the real answer ids.

One tiny non-streaming request (1 output token) asks for both. A server that returns `token_ids`
in the choice supports returned ids; one that answers HTTP 400 is asked again without `min_tokens`.
A probe that cannot reach the server decides nothing: the level runs with neither option, and
every request then records its own failure.
"""

from __future__ import annotations

import time

import orjson

from kvbench.loadgen.outcome import RequestOutcome
from kvbench.loadgen.plan import EndpointConfig
from kvbench.loadgen.transport import CHAT_PATH, COMPLETIONS_PATH, Capabilities, OpenAIClient
from kvbench.results.records import RequestStatus
from kvbench.workload.types import Conversation

PROBE_TIMEOUT_S = 60.0
_PROBE_PROMPT_TOKENS = 1  # shorter than any KV block: the probe leaves no cached prefix behind


def probe_prompt_ids(conversations: list[Conversation]) -> list[int]:
    for conversation in conversations:
        ids = list(conversation.prefix_token_ids) + [
            i for t in conversation.turns for i in t.question_token_ids
        ]
        if ids:
            return ids[:_PROBE_PROMPT_TOKENS]
    return [1] * _PROBE_PROMPT_TOKENS


async def resolve_capabilities(
    client: OpenAIClient, endpoint: EndpointConfig, conversations: list[Conversation]
) -> tuple[Capabilities, str | None, bool]:
    """(capabilities, a note when the probe failed, whether a probe decided them). `endpoint` is
    not changed: the caller keeps a decided answer (`EndpointConfig.with_capabilities`)."""
    if endpoint.send_min_tokens is not None and endpoint.return_token_ids is not None:
        return Capabilities(endpoint.return_token_ids, endpoint.send_min_tokens), None, False
    for with_min_tokens in (True, False):
        outcome = await _probe_once(client, endpoint, conversations, with_min_tokens)
        if outcome.status == RequestStatus.OK.value:
            returns_ids = (
                outcome.token_ids_returned
                if endpoint.return_token_ids is None
                else endpoint.return_token_ids
            )
            return Capabilities(returns_ids, with_min_tokens), None, True
        if outcome.http_status != 400:
            break
    note = f"capability probe failed ({outcome.error}); sending without return_token_ids/min_tokens"
    return Capabilities(bool(endpoint.return_token_ids), False), note, False


async def _probe_once(
    client: OpenAIClient,
    endpoint: EndpointConfig,
    conversations: list[Conversation],
    with_min_tokens: bool,
) -> RequestOutcome:
    body: dict = {
        "model": endpoint.model_name,
        "max_tokens": 1,
        "ignore_eos": True,
        "stream": False,
        "return_token_ids": True,
    }
    if endpoint.api == "completions":
        body["prompt"] = probe_prompt_ids(conversations)
        path = COMPLETIONS_PATH
    else:
        body["messages"] = [{"role": "user", "content": "hello"}]
        path = CHAT_PATH
    if with_min_tokens:
        body["min_tokens"] = 1
    outcome = RequestOutcome(sent_perf=time.perf_counter())
    await client.send(
        path,
        orjson.dumps(body),
        outcome,
        stream=False,
        request_id="kvbench-probe",
        timeout_s=min(PROBE_TIMEOUT_S, endpoint.request_timeout_s),
    )
    return outcome
