"""Flag parsing for `kvbench emulate serve MODEL [vllm serve flags]`.

Contract: `parse_serve_args(argv, environ)` returns a `ServeOptions` or raises `UserError` with one
line naming the flag at fault (never argparse's multi-line usage, never SystemExit). Flags follow
`vllm serve` spelling, including `--flag=value` and vLLM's `--max-num-seq` alias.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass

from kvbench.emulator.engine.interface import EngineArgs
from kvbench.errors import UserError
from kvbench.spec import bounds as B

# Environment variables the emulated engine and its connectors read (vLLM / LMCache semantics).
_ENV_PREFIXES = ("LMCACHE_", "VLLM_")
_ENV_NAMES = ("PYTHONHASHSEED", "KVBENCH_KV_EVENTS_FORMAT")
_BLOCK_SIZES = B.VLLM_BLOCK_SIZES  # vLLM's BlockSize literal
_HASH_ALGOS = ("sha256", "sha256_cbor", "xxhash", "xxhash_cbor")
_VLLM_COMPAT = ("0.11", "0.32")  # behaviour profiles (emulator/engine/compat.py)


@dataclass(slots=True)
class ServeOptions:
    """Everything one emulated engine process needs: the engine's args plus the HTTP front's."""

    engine_args: EngineArgs
    host: str = "127.0.0.1"
    port: int = 8000
    stream_interval: int = 1  # tokens coalesced per SSE chunk (vLLM's --stream-interval)
    tokenizer_dir: str | None = None  # a local HF tokenizer folder (needs `tokenizers`)
    engine_label: str = "0"  # the `engine` label of vLLM's metrics


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors as a one-line UserError instead of usage + SystemExit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"emulate serve: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise UserError(f"emulate serve: {(message or 'invalid arguments').strip()}")


def _positive_int(flag: str, most: int = B.MAX_TOKENS):
    """An int in 1..most (`most`: the flag's physical bound, spec/bounds.py)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UserError(f"{flag}: expected an integer, got {text!r}") from None
        if not 1 <= value <= most:
            raise UserError(f"{flag}: must be in 1..{most}, got {value}")
        return value

    return convert


def _fraction(flag: str):
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"{flag}: expected a number, got {text!r}") from None
        if not 0.0 < value <= 1.0:
            raise UserError(f"{flag}: must be in (0, 1], got {value}")
        return value

    return convert


def _json_object(flag: str):
    def convert(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{flag}: invalid JSON ({err.msg} at char {err.pos})") from None
        if not isinstance(value, dict):
            raise UserError(f"{flag}: expected a JSON object, got {type(value).__name__}")
        return value

    return convert


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"--port: expected an integer, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise UserError(f"--port: must be in 0..65535, got {value}")
    return value


def _choice(flag: str, allowed: tuple):
    def convert(text: str):
        value = (
            type(allowed[0])(text)
            if isinstance(allowed[0], int) and text.lstrip("-").isdigit()
            else text
        )
        if value not in allowed:
            raise UserError(f"{flag}: {text!r} is not one of {', '.join(map(str, allowed))}")
        return value

    return convert


def _build_parser() -> _OneLineParser:
    p = _OneLineParser(prog="kvbench emulate serve", add_help=False, allow_abbrev=False)
    p.add_argument("model")
    p.add_argument("--hardware", default="H100-SXM")
    p.add_argument("--served-model-name", default=None)
    p.add_argument(
        "--tensor-parallel-size",
        "-tp",
        type=_positive_int("--tensor-parallel-size", B.MAX_TENSOR_PARALLEL),
        default=1,
    )
    p.add_argument(
        "--max-num-seqs",
        "--max-num-seq",
        dest="max_num_seqs",
        type=_positive_int("--max-num-seqs", B.MAX_NUM_SEQS),
        default=None,
    )
    p.add_argument(
        "--max-num-batched-tokens", type=_positive_int("--max-num-batched-tokens"), default=None
    )
    p.add_argument("--max-model-len", type=_positive_int("--max-model-len"), default=None)
    p.add_argument(
        "--gpu-memory-utilization", type=_fraction("--gpu-memory-utilization"), default=0.9
    )
    p.add_argument("--block-size", type=_choice("--block-size", _BLOCK_SIZES), default=16)
    p.add_argument(
        "--num-gpu-blocks-override",
        type=_positive_int("--num-gpu-blocks-override", B.MAX_NUM_GPU_BLOCKS),
        default=None,
    )
    p.add_argument(
        "--prefix-caching-hash-algo",
        type=_choice("--prefix-caching-hash-algo", _HASH_ALGOS),
        default="sha256",
    )
    p.add_argument(
        "--enable-prefix-caching", dest="enable_prefix_caching", action="store_true", default=True
    )
    p.add_argument("--no-enable-prefix-caching", dest="enable_prefix_caching", action="store_false")
    p.add_argument("--enable-prompt-tokens-details", action="store_true", default=False)
    p.add_argument("--kv-transfer-config", type=_json_object("--kv-transfer-config"), default=None)
    p.add_argument("--kv-events-config", type=_json_object("--kv-events-config"), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--stream-interval", type=_positive_int("--stream-interval"), default=1)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--vllm-compat", type=_choice("--vllm-compat", _VLLM_COMPAT), default="0.11")
    return p


def engine_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the process environment the engine and its connectors read."""
    return {k: v for k, v in environ.items() if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)}


def serve_help() -> str:
    return _build_parser().format_help()


def parse_serve_args(argv: list[str], environ: Mapping[str, str]) -> ServeOptions:
    ns = _build_parser().parse_args(argv)
    engine_args = EngineArgs(
        model=ns.model,
        hardware=ns.hardware,
        served_model_name=ns.served_model_name,
        tensor_parallel_size=ns.tensor_parallel_size,
        max_num_seqs=ns.max_num_seqs,
        max_num_batched_tokens=ns.max_num_batched_tokens,
        max_model_len=ns.max_model_len,
        gpu_memory_utilization=ns.gpu_memory_utilization,
        block_size=ns.block_size,
        num_gpu_blocks_override=ns.num_gpu_blocks_override,
        enable_prefix_caching=ns.enable_prefix_caching,
        prefix_caching_hash_algo=ns.prefix_caching_hash_algo,
        enable_prompt_tokens_details=ns.enable_prompt_tokens_details,
        kv_transfer_config=ns.kv_transfer_config,
        kv_events_config=ns.kv_events_config,
        env=engine_env(environ),
        seed=ns.seed,
        vllm_compat=ns.vllm_compat,
    )
    return ServeOptions(
        engine_args=engine_args,
        host=ns.host,
        port=ns.port,
        stream_interval=ns.stream_interval,
        tokenizer_dir=ns.tokenizer,
    )
