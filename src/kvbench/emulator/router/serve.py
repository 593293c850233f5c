"""`kvbench emulate router --config EPP.yaml --endpoint URL [--endpoint URL ...]`: assemble and run.

Flags beyond llm-d's config: `--refresh-metrics-interval` (GIE's flag, default 50ms),
`--decision-log PATH` (JSON lines, one per routing decision), `--replay-endpoint POD=tcp://h:p`
(repeatable; the engine's KV-event replay socket, POD = its host:port), `--seed` (picker RNG),
`--pool-name` (label of the inference_pool_* metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from aiohttp import web

from kvbench.emulator.router.build import BuiltPlugins, build_plugins
from kvbench.emulator.router.config import EppConfig, load_config_file
from kvbench.emulator.router.endpoints import EndpointPool
from kvbench.emulator.router.metrics import EppMetrics, RouterDegradationCollector
from kvbench.emulator.router.proxy import RouterProxy
from kvbench.emulator.router.scorers import parse_duration_s
from kvbench.errors import UserError
from kvbench.spec.bounds import MAX_K8S_REPLICAS

log = logging.getLogger(__name__)


@dataclass
class RouterOptions:
    endpoints: list[str]
    host: str = "127.0.0.1"
    port: int = 0
    refresh_interval_s: float = 0.05
    decision_log: Path | None = None
    replay_endpoints: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    pool_name: str = "kvbench-pool"


class Router:
    """A running router: `await Router(config, options).start()`, then `.url`, then `await stop()`."""

    def __init__(self, config: EppConfig, options: RouterOptions) -> None:
        self.config = config
        self.options = options
        self.metrics = EppMetrics(options.pool_name)
        self.pool = EndpointPool(options.endpoints, time.monotonic, options.refresh_interval_s)
        self.plugins: BuiltPlugins = build_plugins(
            config,
            self.metrics,
            random.Random(options.seed),
            time.monotonic,
            options.replay_endpoints,
            self.pool.resolve_pod,
        )
        self.metrics.registry.register(
            RouterDegradationCollector(
                (w.scorer for w in self.plugins.scheduler.scorers),
                (s.stats for s in self.plugins.subscribers),
            )
        )
        self._log_file = options.decision_log.open("ab") if options.decision_log else None
        self.proxy = RouterProxy(self.pool, self.plugins.scheduler, self.metrics, self._log_file)
        self._runner: web.AppRunner | None = None
        self.port = options.port

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    async def start(self) -> Router:
        for subscriber in self.plugins.subscribers:
            try:
                await subscriber.start()
            except zmq.ZMQError as err:
                await self.stop()
                raise UserError(
                    f"kvEventsConfig.zmqEndpoint {subscriber.endpoint}: cannot bind ({err})"
                ) from None
        await self.pool.start()
        await self.proxy.start()
        self._runner = web.AppRunner(
            self.proxy.make_app(), access_log=None, handler_cancellation=True
        )
        await self._runner.setup()
        # A deep accept queue: a burst of new streams waits to be accepted instead of timing out.
        site = web.TCPSite(self._runner, self.options.host, self.options.port, backlog=4096)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        """Stops whatever start() got to (safe after a failed start)."""
        if self._runner is not None:
            await self._runner.cleanup()
        await self.proxy.stop()
        await self.pool.stop()
        for subscriber in self.plugins.subscribers:
            if subscriber.started:
                await subscriber.stop()
        for index in self.plugins.indexes:
            await index.close()
        if self._log_file is not None:
            self._log_file.close()


def _parse_replay(values: list[str]) -> dict[str, str]:
    replays = {}
    for value in values:
        pod, sep, url = value.partition("=")
        if not sep or not pod or not url.startswith(("tcp://", "ipc://")):
            raise UserError(f"--replay-endpoint {value!r}: expected POD=tcp://HOST:PORT")
        replays[pod] = url
    return replays


# A scrape loop faster than 1 ms would spin; one slower than a minute never notices a dead engine.
MIN_REFRESH_S, MAX_REFRESH_S = 0.001, 60.0


class _ArgParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2 via UserError
        raise UserError(f"kvbench emulate router: {message}")


def parse_args(argv: list[str]) -> tuple[EppConfig, RouterOptions]:
    parser = _ArgParser(
        prog="kvbench emulate router",
        description="The emulated llm-d endpoint picker (EPP) in front of emulated or real engines.",
    )
    add = parser.add_argument
    add("--config", required=True, help="llm-d EndpointPickerConfig YAML (required)")
    add(
        "--endpoint",
        action="append",
        required=True,
        help="engine URL http://HOST:PORT; repeat per engine (required)",
    )
    add("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    add("--port", type=int, default=8000, help="listen port, 0 = any free (default: 8000)")
    add(
        "--refresh-metrics-interval",
        default="50ms",
        help="how often each engine's /metrics is scraped (default: 50ms)",
    )
    add("--decision-log", help="write one JSON line per routing decision here (default: none)")
    add(
        "--replay-endpoint",
        action="append",
        default=[],
        help="POD=tcp://HOST:PORT KV-event replay socket of an engine; repeatable (default: none)",
    )
    add("--seed", type=int, default=0, help="tie-break seed of the picker (default: 0)")
    add("--pool-name", default="kvbench-pool", help="InferencePool name (default: kvbench-pool)")
    args = parser.parse_args(argv)
    for url in args.endpoint:
        if not url.startswith(("http://", "https://")):
            raise UserError(f"--endpoint {url!r}: expected http://HOST:PORT")
    if len(args.endpoint) > MAX_K8S_REPLICAS:
        raise UserError(f"--endpoint: {len(args.endpoint)} endpoints; at most {MAX_K8S_REPLICAS}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port: must be in 0..65535, got {args.port}")
    try:
        interval_s = parse_duration_s(args.refresh_metrics_interval)
    except ValueError:
        raise UserError(
            f"--refresh-metrics-interval {args.refresh_metrics_interval!r}: expected e.g. 50ms"
        ) from None
    if not MIN_REFRESH_S <= interval_s <= MAX_REFRESH_S:
        raise UserError(
            f"--refresh-metrics-interval {args.refresh_metrics_interval!r}: must be between "
            f"{MIN_REFRESH_S * 1000:g}ms and {MAX_REFRESH_S:g}s"
        )
    options = RouterOptions(
        endpoints=args.endpoint,
        host=args.host,
        port=args.port,
        refresh_interval_s=interval_s,
        decision_log=Path(args.decision_log) if args.decision_log else None,
        replay_endpoints=_parse_replay(args.replay_endpoint),
        seed=args.seed,
        pool_name=args.pool_name,
    )
    return load_config_file(args.config), options


async def _serve(config: EppConfig, options: RouterOptions) -> None:
    router = await Router(config, options).start()
    print(
        f"kvbench router listening on {router.url} in front of {', '.join(options.endpoints)}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await router.stop()


def main(argv: list[str]) -> int:
    config, options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(config, options))
    except OSError as err:
        raise UserError(
            f"kvbench emulate router: cannot bind {options.host}:{options.port} ({err.strerror})"
        ) from None
    return 0
