"""Run the router's async plugin calls (scorers, KV-block index) from the synchronous event loop.

The in-memory index and every scorer complete without ever suspending, so their coroutines are
driven to the end with one `send(None)`: no asyncio loop, no task, no cost. A Redis / Valkey index
really waits on its server; with `use_asyncio` each call runs to completion on a private asyncio
loop (the round trip is real, its wall time is not part of virtual time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class CoroutineDriver:
    def __init__(self, use_asyncio: bool) -> None:
        self._loop = asyncio.new_event_loop() if use_asyncio else None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is not None:
            return self._loop.run_until_complete(coroutine)
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value
        coroutine.close()
        raise RuntimeError("a router plugin suspended without an asyncio loop (it needs a store)")

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
