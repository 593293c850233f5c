"""`kvbench emulate serve MODEL [vllm serve flags]`: one emulated engine as a process.

Prints one line when ready (`... ready on http://HOST:PORT`), serves until SIGINT / SIGTERM, then
stops cleanly and returns 0. Bad flags or values: one line on stderr naming the flag, exit 2.
uvloop is used when installed (optional).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from kvbench.emulator.api.args import ServeOptions, parse_serve_args, serve_help
from kvbench.emulator.api.server import EngineServer, start_server, with_tokenizer
from kvbench.errors import UserError


async def _serve(options: ServeOptions) -> None:
    from kvbench.emulator.engine.build import build_engine

    options, tokenizer = with_tokenizer(options)
    engine = build_engine(options.engine_args)
    server = EngineServer(engine, options, tokenizer=tokenizer)
    try:
        handle = await start_server(server, options.host, options.port)
    except OSError as err:
        raise UserError(
            f"--port: cannot listen on {options.host}:{options.port} ({err.strerror})"
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"kvbench emulate serve: {server.model_name} ready on {handle.url}", flush=True)
    await stop.wait()
    await handle.stop()


def _run(coro) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


def main(argv: list[str]) -> int:
    if "--help" in argv or "-h" in argv:
        print(serve_help())
        return 0
    try:
        options = parse_serve_args(argv, os.environ)
        _run(_serve(options))
    except UserError as err:
        print(f"kvbench: error: {err}", file=sys.stderr)
        return UserError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
