"""The router's HTTP front: an aiohttp streaming proxy that asks the scheduler where each request goes.

Contract:
- POST /v1/completions and /v1/chat/completions are scheduled and forwarded; the response streams
  through chunk by chunk as the engine sends it (SSE is never buffered); the engine's headers pass
  through (e.g. `x-kvbench-kv-hits`) plus `x-kvbench-endpoint`, llm-d's
  `x-gateway-destination-endpoint` (both the chosen host:port) and
  `x-kvbench-router-predicted-hit-tokens`.
- A refused / reset connection to the chosen engine ejects it and the request is rescheduled on
  the others (before any byte went to the client). A connection not accepted in time (a full
  accept queue under a burst) marks the engine slow, not dead: the request goes to another
  endpoint, or back to the same ones for up to CONNECT_RETRIES more rounds; no ready endpoint
  -> 503.
- A client that goes away mid-stream: the upstream response is closed, so the engine sees the
  disconnect and aborts the request.
- GET /v1/models is forwarded to a ready endpoint; GET /health is 200 while one is ready; GET
  /metrics is the EPP's own metrics.
- Each decision is appended as one JSON line to the decision log, if one is given.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import IO

import aiohttp
import orjson
from aiohttp import web

from kvbench.emulator.router.endpoints import Endpoint, EndpointPool
from kvbench.emulator.router.metrics import EppMetrics
from kvbench.emulator.router.request import BadRequest, parse_request
from kvbench.emulator.router.scheduler import Decision, Scheduler

log = logging.getLogger(__name__)

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "upgrade",
    "proxy-connection",
    "te",
    "trailer",
}  # content-encoding is end to end: bodies pass as sent
_UPSTREAM_ERRORS = (aiohttp.ClientConnectionError, OSError, AttributeError)
# A connection the engine did not accept in time: its accept queue is full (a burst of new
# streams), it is not down. Tried again, never ejected (the scrape loop decides about health).
_SLOW_ERRORS = (asyncio.TimeoutError, aiohttp.ServerTimeoutError)
CONNECT_RETRIES = 3  # extra rounds over the pool for a request whose endpoints were slow to accept
CONNECT_TIMEOUT_S = 3.0  # past Linux's first SYN retransmit (1 s): a dropped SYN is retried once


class RouterProxy:
    def __init__(
        self,
        pool: EndpointPool,
        scheduler: Scheduler,
        metrics: EppMetrics,
        decision_log: IO[bytes] | None = None,
        wall_clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.pool = pool
        self.scheduler = scheduler
        self.metrics = metrics
        self.decision_log = decision_log
        self.wall_clock = wall_clock
        self.timer = timer
        self._ids = itertools.count()
        self.session: aiohttp.ClientSession | None = None

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/completions", self.handle_completion)
        app.router.add_post("/v1/chat/completions", self.handle_completion)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/metrics", self.handle_metrics)
        return app

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.pool.ready_endpoints() else 503)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(self.pool), content_type="text/plain", charset="utf-8"
        )

    async def handle_models(self, request: web.Request) -> web.StreamResponse:
        ready = self.pool.ready_endpoints()
        if not ready:
            return web.json_response({"error": {"message": "no ready endpoint"}}, status=503)
        assert self.session is not None
        async with self.session.get(ready[0].url + "/v1/models") as upstream:
            return web.Response(
                status=upstream.status,
                body=await upstream.read(),
                content_type=upstream.content_type,
            )

    async def handle_completion(self, request: web.Request) -> web.StreamResponse:
        started_s = self.timer()
        body = await request.read()
        request_id = request.headers.get("x-request-id") or f"kvbench-router-{next(self._ids)}"
        try:
            routed = parse_request(
                orjson.loads(body), request_id, is_chat=request.path.endswith("chat/completions")
            )
        except (BadRequest, orjson.JSONDecodeError) as err:
            return web.json_response(
                {"error": {"message": str(err), "type": "BadRequestError"}}, status=400
            )
        self.metrics.request_total.labels(routed.model, routed.model).inc()
        try:
            return await self._route(request, body, routed, started_s)
        finally:
            self.metrics.request_duration_s.labels(routed.model, routed.model).observe(
                self.timer() - started_s
            )

    async def _route(
        self, request: web.Request, body: bytes, routed, started_s: float
    ) -> web.StreamResponse:
        dead: set[str] = set()  # refused / reset for this request: ejected from the pool too
        timed_out: set[str] = set()  # did not accept the connection in time: busy, not dead
        for attempt in range(len(self.pool.endpoints) + CONNECT_RETRIES):
            ready = [e for e in self.pool.ready_endpoints() if e.address not in dead]
            # Prefer endpoints that have not timed out for this request; when all of them have,
            # try them again (a full accept queue drains): a busy pool is not a dead one.
            candidates = [e for e in ready if e.address not in timed_out] or ready
            if not candidates:
                break
            decision = await self.scheduler.schedule(routed, candidates)
            self.scheduler.pre_request(decision)
            self._log_decision(decision, attempt)
            try:
                upstream = await self._open_upstream(request, body, decision.chosen)
            except _SLOW_ERRORS as err:
                self.scheduler.response_complete(decision)
                log.debug(
                    "endpoint %s slow to accept (%s)", decision.chosen.url, type(err).__name__
                )
                self.pool.mark_slow(decision.chosen)
                timed_out.add(decision.chosen.address)
                continue
            except _UPSTREAM_ERRORS as err:
                self.scheduler.response_complete(decision)
                log.warning(
                    "endpoint %s failed (%s): ejected, rescheduling",
                    decision.chosen.url,
                    type(err).__name__,
                )
                self.pool.mark_connection_error(decision.chosen)
                dead.add(decision.chosen.address)
                continue
            try:
                return await self._stream_back(request, upstream, decision)
            finally:
                self.scheduler.response_complete(decision)
        self.metrics.request_error_total.labels(routed.model, routed.model, "503").inc()
        return web.json_response(
            {"error": {"message": "no ready endpoint", "type": "ServiceUnavailable"}}, status=503
        )

    async def _open_upstream(
        self, request: web.Request, body: bytes, endpoint: Endpoint
    ) -> aiohttp.ClientResponse:
        """POST to the engine. A pooled keep-alive connection the engine closed just as it was
        reused fails without the engine being down: that is retried once on a new connection."""
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        url = endpoint.url + request.path_qs
        try:
            return await self.session.post(url, data=body, headers=headers)
        except aiohttp.ClientConnectorError:
            raise  # could not connect at all: the engine is down
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, AttributeError) as err:
            # AttributeError: aiohttp writing on a transport torn down under it (same race)
            log.info("retrying %s on a fresh connection after %s", endpoint.url, type(err).__name__)
            return await self.session.post(url, data=body, headers=headers)

    async def _stream_back(
        self, request: web.Request, upstream: aiohttp.ClientResponse, decision: Decision
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status)
        for name, value in upstream.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                response.headers.add(name, value)
        response.headers["x-kvbench-endpoint"] = decision.chosen.address
        response.headers["x-gateway-destination-endpoint"] = decision.chosen.address
        response.headers["x-kvbench-router-predicted-hit-tokens"] = str(
            decision.predicted_hit_tokens
        )
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        except aiohttp.ClientPayloadError:
            upstream.close()  # the engine died mid-stream; the client sees a truncated body
        except BaseException:  # the client went away (reset, cancelled handler) or the write failed
            log.info(
                "client of %s went away: closing its upstream request", decision.request.request_id
            )
            upstream.close()
            raise
        finally:
            upstream.release()
        return response

    def _log_decision(self, decision: Decision, retries: int) -> None:
        if self.decision_log is not None:
            self.decision_log.write(
                orjson.dumps(decision.log_record(self.wall_clock(), retries)) + b"\n"
            )
            self.decision_log.flush()
