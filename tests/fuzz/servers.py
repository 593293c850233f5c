"""A real emulated engine and a real router in front of it, on free 127.0.0.1 ports, served from a
background thread's event loop so that synchronous (hypothesis) tests can send them requests."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from typing import Any

from kvbench.emulator.engine.interface import EngineArgs
from kvbench.emulator.router.config import load_config_text

ROUTER_CONFIG = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: prefix-cache-scorer
"""


def tiny_engine_args() -> EngineArgs:
    return EngineArgs(
        model="Qwen/Qwen3-0.6B",
        served_model_name="tiny",
        block_size=16,
        num_gpu_blocks_override=64,
        max_model_len=512,
        max_num_seqs=8,
        env={"PYTHONHASHSEED": "0"},
    )


class ServingStack:
    """`with ServingStack() as stack:` -> stack.engine_port, stack.router_port."""

    def __init__(self) -> None:
        self.engine_port = self.router_port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ServingStack:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(60)
        return self

    async def _start(self) -> None:
        from kvbench.emulator.api.server import start_emulated_engine
        from kvbench.emulator.router.serve import Router, RouterOptions

        self._engine = await start_emulated_engine(tiny_engine_args(), "127.0.0.1", 0)
        self.engine_port = int(self._engine.url.rsplit(":", 1)[1])
        options = RouterOptions(endpoints=[self._engine.url])
        self._router = await Router(load_config_text(ROUTER_CONFIG), options).start()
        self.router_port = self._router.port

    async def _stop(self) -> None:
        await self._router.stop()
        await self._engine.stop()

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One HTTP request; (status, whole body). A 30 s bound: nothing here should take long."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def post_json(port: int, path: str, document: Any) -> tuple[int, bytes]:
    body = json.dumps(document, allow_nan=True).encode("utf-8", "surrogatepass")
    return request(port, "POST", path, body)
