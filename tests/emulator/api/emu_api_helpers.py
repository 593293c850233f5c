"""Shared helpers for the emulated engine's HTTP tests: start a real engine on a free port."""

from __future__ import annotations

import contextlib

import aiohttp
import orjson

from kvbench.emulator.api.server import start_emulated_engine
from kvbench.emulator.engine.interface import EngineArgs

MODEL = "Qwen/Qwen3-0.6B"


def tiny_args(**overrides) -> EngineArgs:
    """A small engine: 16-token blocks, 64 GPU blocks, 512-token context, fixed hash seed."""
    base = dict(
        model=MODEL,
        served_model_name="tiny",
        block_size=16,
        num_gpu_blocks_override=64,
        max_model_len=512,
        max_num_seqs=8,
        env={"PYTHONHASHSEED": "0"},
        prefix_caching_hash_algo="sha256_cbor",
    )
    base.update(overrides)
    return EngineArgs(**base)


@contextlib.asynccontextmanager
async def running_engine(args: EngineArgs, **kwargs):
    handle = await start_emulated_engine(args, "127.0.0.1", 0, **kwargs)
    try:
        async with aiohttp.ClientSession(base_url=handle.url) as session:
            yield handle, session
    finally:
        await handle.stop()


async def read_sse(response: aiohttp.ClientResponse) -> list:
    """All `data:` payloads of an SSE response, JSON-decoded except the final `[DONE]`."""
    events = []
    async for raw_line in response.content:
        line = raw_line.strip()
        if not line:
            continue
        assert line.startswith(b"data: "), line
        data = line[len(b"data: ") :]
        events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return events
