"""HTTP transport: one aiohttp ClientSession per level, OpenAI completions/chat, streaming or not.

Contract: `OpenAIClient.send()` never raises for a failed request (except `CancelledError`, which it
re-raises after marking the outcome cancelled): every failure is written into the returned
`RequestOutcome` with its cause: connection refused, HTTP status + the server's error message,
malformed or truncated SSE, connection dropped mid-stream, error event in the stream, timeout.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass

import aiohttp
import orjson

from kvbench.loadgen.outcome import RequestOutcome
from kvbench.loadgen.sse import SSEParser
from kvbench.results.records import RequestStatus

COMPLETIONS_PATH = "/v1/completions"
CHAT_PATH = "/v1/chat/completions"
# Response headers we keep (lower case): tier attribution, serving endpoint, router prediction.
KEPT_HEADERS = (
    "x-kvbench-kv-hits",
    "x-kvbench-endpoint",
    "x-gateway-destination-endpoint",
    "x-kvbench-router-predicted-hit-tokens",
)
_DONE = b"[DONE]"


class StreamProtocolError(Exception):
    """The server's stream broke the SSE / OpenAI chunk contract (message says how)."""


@dataclass(slots=True)
class Capabilities:
    """What the server accepts, learned by one probe request (or given by the user)."""

    return_token_ids: bool
    min_tokens: bool


def raise_fd_limit(wanted_fds: int) -> int:
    """Raise this process's soft open-file limit toward `wanted_fds` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted_fds if hard == resource.RLIM_INFINITY else min(wanted_fds, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def completions_body(
    model: str, prompt_ids: list[int], max_tokens: int, caps: Capabilities, stream: bool
) -> bytes:
    body: dict = {
        "model": model,
        "prompt": prompt_ids,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }
    _add_common(body, max_tokens, caps, stream)
    return orjson.dumps(body)


def chat_body(
    model: str, messages: list[dict], max_tokens: int, caps: Capabilities, stream: bool
) -> bytes:
    body: dict = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }
    _add_common(body, max_tokens, caps, stream)
    return orjson.dumps(body)


def _add_common(body: dict, max_tokens: int, caps: Capabilities, stream: bool) -> None:
    if caps.min_tokens:
        body["min_tokens"] = max_tokens
    if caps.return_token_ids:
        body["return_token_ids"] = True
    if stream:
        body["stream_options"] = {"include_usage": True}


class OpenAIClient:
    """One pooled aiohttp session for a level; `connection_limit` 0 means unbounded."""

    def __init__(self, base_url: str, connection_limit: int) -> None:
        self._base_url = base_url.rstrip("/")
        self._connection_limit = connection_limit
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OpenAIClient:
        raise_fd_limit(max(self._connection_limit, 1024) + 256)
        connector = aiohttp.TCPConnector(
            limit=self._connection_limit, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"Content-Type": "application/json"},
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        path: str,
        body: bytes,
        outcome: RequestOutcome,
        *,
        stream: bool,
        request_id: str,
        timeout_s: float,
    ) -> None:
        """Send now and fill `outcome` (its `sent_perf` is set by the caller right before the call)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._exchange(path, body, stream, request_id, outcome)
        except TimeoutError:
            outcome.fail(
                RequestStatus.TIMEOUT,
                f"request timed out after {timeout_s:g} s "
                f"({outcome.streamed_tokens} tokens received)",
            )
        except asyncio.CancelledError:
            outcome.fail(RequestStatus.CANCELLED, "cancelled by the client")
            outcome.end_perf = time.perf_counter()
            raise
        except aiohttp.ClientConnectorError as err:
            outcome.fail(RequestStatus.ERROR, connect_error_message(err))
        except (
            aiohttp.ClientPayloadError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
        ) as err:
            outcome.fail(
                RequestStatus.ERROR,
                f"connection dropped mid-stream after "
                f"{outcome.streamed_tokens} tokens: {type(err).__name__}: {err}",
            )
        except StreamProtocolError as err:
            outcome.fail(RequestStatus.ERROR, str(err))
        except aiohttp.ClientError as err:
            outcome.fail(RequestStatus.ERROR, f"client error: {type(err).__name__}: {err}")
        except Exception as err:  # noqa: BLE001 - one odd response must not end the run; the record says what
            outcome.fail(
                RequestStatus.ERROR, f"unexpected client error: {type(err).__name__}: {err}"
            )
        finally:
            if outcome.end_perf is None:
                outcome.end_perf = time.perf_counter()

    async def _exchange(
        self, path: str, body: bytes, stream: bool, request_id: str, outcome: RequestOutcome
    ) -> None:
        assert self._session is not None, "use OpenAIClient as an async context manager"
        headers = {"x-request-id": request_id}
        async with self._session.post(self._base_url + path, data=body, headers=headers) as resp:
            outcome.http_status = resp.status
            for name in KEPT_HEADERS:
                value = resp.headers.get(name)
                if value is not None:
                    outcome.headers[name] = value
            if resp.status != 200:
                text = await resp.text(errors="replace")
                outcome.fail(
                    RequestStatus.ERROR, f"HTTP {resp.status}: {server_error_message(text)}"
                )
                return
            if stream:
                await _read_stream(resp, outcome)
            else:
                payload = await resp.read()
                _take_full_body(outcome, payload, time.perf_counter())


def connect_error_message(err: aiohttp.ClientConnectorError) -> str:
    refused = isinstance(err.os_error, ConnectionRefusedError)
    return f"{'connection refused' if refused else 'cannot connect'}: {err}"


def server_error_message(text: str) -> str:
    """The message of an OpenAI-style error body ({"error": {"message"}} or vLLM's {"message"})."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text.strip()[:300] or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if obj.get("message"):
            return str(obj["message"])
    return text.strip()[:300]


async def _read_stream(resp: aiohttp.ClientResponse, outcome: RequestOutcome) -> None:
    parser = SSEParser()
    async for data in resp.content.iter_any():
        arrival = time.perf_counter()
        for payload in parser.feed(data):
            if outcome.done_seen:
                continue  # nothing after [DONE] counts
            _take_event(outcome, payload, arrival)
    if not outcome.done_seen:
        partial = " (inside an unfinished event)" if parser.pending() else ""
        raise StreamProtocolError(
            f"truncated SSE stream: ended before data: [DONE] after "
            f"{outcome.streamed_tokens} tokens{partial}"
        )


def _take_event(outcome: RequestOutcome, payload: bytes, arrival: float) -> None:
    """One SSE data payload (hot path: runs once per streamed chunk)."""
    if payload == _DONE:
        outcome.done_seen = True
        outcome.end_perf = arrival
        return
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise StreamProtocolError(f"malformed SSE event (not JSON): {payload[:120]!r}") from None
    if type(obj) is not dict:
        raise StreamProtocolError(f"malformed SSE event (not an object): {payload[:120]!r}")
    if obj.get("error") is not None:
        raise StreamProtocolError(
            f"server error in stream: {server_error_message(payload.decode(errors='replace'))}"
        )
    usage = obj.get("usage")
    if usage:
        outcome.usage = usage
    choices = obj.get("choices")
    if choices:
        tokens = 0
        for choice in choices:
            tokens += _take_choice(outcome, choice)
        if tokens:
            outcome.chunk_arrivals.append((arrival, tokens))


def _take_choice(outcome: RequestOutcome, choice: dict) -> int:
    """Append one choice's text/ids; return how many tokens it carried."""
    text = choice.get("text")
    if text is None:
        delta = choice.get("delta") or choice.get("message")
        text = delta.get("content") if delta else None
    if text:
        outcome.output_text_parts.append(text)
    ids = choice.get("token_ids")
    if ids is not None:
        outcome.token_ids_returned = True
        outcome.output_token_ids += ids
        return len(ids)
    return 1 if text else 0


def _take_full_body(outcome: RequestOutcome, payload: bytes, arrival: float) -> None:
    """A non-streaming response: all tokens arrive at once (TTFT = e2e)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise StreamProtocolError(
            f"malformed response body (not JSON): {payload[:120]!r}"
        ) from None
    outcome.usage = obj.get("usage")
    tokens = 0
    for choice in obj.get("choices") or ():
        tokens += _take_choice(outcome, choice)
    completion_tokens = (outcome.usage or {}).get("completion_tokens")
    if completion_tokens is not None:
        tokens = int(completion_tokens)
    if tokens:
        outcome.chunk_arrivals.append((arrival, tokens))
    outcome.done_seen = True
    outcome.end_perf = arrival
