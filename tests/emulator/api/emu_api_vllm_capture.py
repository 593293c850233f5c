"""Real vLLM 0.32 (CPU build) responses captured by scripts/capture-vllm-responses.py, and the
emulated engine configured like that server (same tokenizer folder, names and lengths)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emu_api_helpers import tiny_args

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CAPTURE = FIXTURES / "vllm-0.32-cpu-responses.json"
TOKENIZER_DIR = FIXTURES / "tiny-qwen3"
# kvbench's documented addition to vLLM's usage object
KVBENCH_KEYS = {"kvbench"}


@dataclass(frozen=True)
class CapturedCase:
    name: str
    path: str
    body: dict | None
    status: int
    response: Any  # the JSON body, or None for a stream
    events: list | None  # the SSE payloads of a stream ("[DONE]" last)


def captured_cases() -> list[CapturedCase]:
    doc = json.loads(CAPTURE.read_text())
    return [
        CapturedCase(
            c["name"], c["path"], c["body"], c["status"], c.get("response"), c.get("events")
        )
        for c in doc["cases"]
    ]


def case(name: str) -> CapturedCase:
    return next(c for c in captured_cases() if c.name == name)


def vllm032_args(**overrides):
    """The emulated twin of the captured server (tiny-qwen3, 1024 tokens, 32-token blocks)."""
    base = dict(
        model="kvbench/tiny-qwen3",
        served_model_name="tiny-qwen3",
        block_size=32,
        num_gpu_blocks_override=256,
        max_model_len=1024,
        enable_prompt_tokens_details=True,
        vllm_compat="0.32",
    )
    base.update(overrides)
    return tiny_args(**base)


# dicts keyed by data (token text or id), not by field names
DATA_KEYED = {"top_logprobs", "prompt_logprobs"}


def key_shape(value: Any, data_keyed: bool = False) -> Any:
    """The nested key structure of a JSON value: field names and nesting, not values. A list's
    shape is the set of its structured items' shapes (scalars and nulls leave none); the dicts
    of completions' `top_logprobs` / `prompt_logprobs` are keyed by tokens, so they count as
    one `*` key."""
    if isinstance(value, dict):
        if data_keyed:
            return {"*": sorted({json.dumps(key_shape(v), sort_keys=True) for v in value.values()})}
        return {k: key_shape(v, k in DATA_KEYED) for k, v in value.items() if k not in KVBENCH_KEYS}
    if isinstance(value, list):
        shapes = {
            json.dumps(key_shape(v, data_keyed), sort_keys=True)
            for v in value
            if isinstance(v, (dict, list))
        }
        return sorted(shapes)
    return None


def chunk_shapes(events: list) -> set[str]:
    """The distinct key structures of a stream's chunks."""
    return {json.dumps(key_shape(e), sort_keys=True) for e in events if e != "[DONE]"}
