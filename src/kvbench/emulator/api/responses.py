"""vLLM-shaped response bodies, per `--vllm-compat` profile.

Key sets and order follow real vLLM's pydantic models (0.11 as the seeds' deployments answered,
0.32 as captured from the real CPU build into tests/fixtures/vllm-0.32-cpu-responses.json):
- 0.32 adds `routed_experts` to every non-streamed choice, `ec_transfer_params` and `metrics` to
  every non-streamed body, `prompt_text` to chat bodies and to chat's first stream chunk, a
  `system_fingerprint` ("vllm-0.32.0-<hex>") on the finish and usage chunks, and
  `created_cache_tokens` / `multimodal_tokens` in `prompt_tokens_details`; its chat message carries
  `reasoning` instead of 0.11's `reasoning_content` and `tool_calls: []`.
- kvbench's addition on both: `usage.kvbench = {gpu_hit_tokens, cpu_hit_tokens,
  remote_hit_tokens}` (per-request tier attribution).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from kvbench.emulator.engine.interface import TierHits


@dataclass(frozen=True, slots=True)
class ResponseShape:
    """The differences between vLLM versions' response shapes (one profile per --vllm-compat)."""

    version: str
    v032_fields: bool  # routed_experts, ec_transfer_params, metrics, prompt_text, ...
    system_fingerprint: str | None


def response_shape(vllm_compat: str) -> ResponseShape:
    if vllm_compat == "0.32":
        return ResponseShape("0.32.0", True, f"vllm-0.32.0-{os.urandom(4).hex()}")
    return ResponseShape("0.11.2", False, None)


@dataclass(slots=True)
class UsageCounts:
    """One response's token counts (summed over its prompts; prompt tokens once per prompt)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    hits: TierHits


def hits_header(hits: TierHits) -> str:
    return f"gpu={hits.gpu_tokens},cpu={hits.cpu_tokens},remote={hits.remote_tokens}"


def _kvbench_hits(hits: TierHits) -> dict[str, int]:
    return {
        "gpu_hit_tokens": hits.gpu_tokens,
        "cpu_hit_tokens": hits.cpu_tokens,
        "remote_hit_tokens": hits.remote_tokens,
    }


def usage_body(
    shape: ResponseShape, counts: UsageCounts, details_on: bool, chat: bool, final_chunk: bool
) -> dict[str, Any]:
    """`usage` of a full body (final_chunk=False) or of the stream's usage chunk (exclude_none)."""
    out: dict[str, Any] = {
        "prompt_tokens": counts.prompt_tokens,
        "total_tokens": counts.prompt_tokens + counts.completion_tokens,
        "completion_tokens": counts.completion_tokens,
    }
    if details_on:
        details: dict[str, Any] = {"cached_tokens": counts.cached_tokens}
        if shape.v032_fields:
            created = 0 if chat else None  # vLLM 0.32 fills it on chat only
            if final_chunk:
                if created is not None:
                    details["created_cache_tokens"] = created
            else:
                details.update(created_cache_tokens=created, multimodal_tokens=None)
        out["prompt_tokens_details"] = details
    elif not final_chunk:
        out["prompt_tokens_details"] = None
    if shape.v032_fields and not final_chunk:
        out["completion_tokens_details"] = None
    out["kvbench"] = _kvbench_hits(counts.hits)
    return out


def continuous_usage(
    shape: ResponseShape, prompt_tokens: int, completion_tokens: int, chat: bool
) -> dict[str, Any]:
    """The per-chunk usage of `stream_options.continuous_usage_stats`."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    if chat and shape.v032_fields:
        out["completion_tokens_details"] = None
    return out


@dataclass(slots=True)
class ChoiceResult:
    """One finished choice, ready to render."""

    index: int
    text: str
    finish_reason: str | None
    logprobs: dict[str, Any] | None
    token_ids: list[int] | None  # with return_token_ids
    prompt_token_ids: list[int] | None  # completions with return_token_ids
    prompt_logprobs: list[Any] | None  # completions with echo + logprobs


def completion_body(
    shape: ResponseShape,
    head: dict[str, Any],
    choices: list[ChoiceResult],
    usage: dict[str, Any],
) -> dict[str, Any]:
    rendered = []
    for c in choices:
        choice: dict[str, Any] = {
            "index": c.index,
            "text": c.text,
            "logprobs": c.logprobs,
            "finish_reason": c.finish_reason,
            "stop_reason": None,
            "token_ids": c.token_ids,
            "prompt_logprobs": c.prompt_logprobs,
            "prompt_token_ids": c.prompt_token_ids,
        }
        if shape.v032_fields:
            choice["routed_experts"] = None
        rendered.append(choice)
    body = {
        **head,
        "choices": rendered,
        "service_tier": None,
        "system_fingerprint": shape.system_fingerprint,
        "usage": usage,
        "kv_transfer_params": None,
    }
    if shape.v032_fields:
        body.update(ec_transfer_params=None, metrics=None)
    return body


def _chat_message(shape: ResponseShape, text: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if shape.v032_fields:
        message["reasoning"] = None
    else:
        message.update(tool_calls=[], reasoning_content=None)
    return message


def chat_body(
    shape: ResponseShape,
    head: dict[str, Any],
    choices: list[ChoiceResult],
    usage: dict[str, Any],
    prompt_token_ids: list[int] | None,
) -> dict[str, Any]:
    rendered = []
    for c in choices:
        choice: dict[str, Any] = {
            "index": c.index,
            "message": _chat_message(shape, c.text),
            "logprobs": c.logprobs,
            "finish_reason": c.finish_reason,
            "stop_reason": None,
            "token_ids": c.token_ids,
        }
        if shape.v032_fields:
            choice["routed_experts"] = None
        rendered.append(choice)
    body: dict[str, Any] = {
        **head,
        "choices": rendered,
        "service_tier": None,
        "system_fingerprint": shape.system_fingerprint,
        "usage": usage,
        "prompt_logprobs": None,
        "prompt_token_ids": prompt_token_ids,
    }
    if shape.v032_fields:
        body["prompt_text"] = None
    body["kv_transfer_params"] = None
    if shape.v032_fields:
        body.update(ec_transfer_params=None, metrics=None)
    return body


def model_card(
    shape: ResponseShape, model_name: str, root: str, max_model_len: int, created: int
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": model_name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": root,
        "parent": None,
        "max_model_len": max_model_len,
    }
    card["permission"] = [
        {
            "id": f"modelperm-{os.urandom(8).hex()}",
            "object": "model_permission",
            "created": created,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }
    ]
    return card
