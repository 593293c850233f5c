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
from pathlib import Path

from kvbench.emulator.engine.interface import EngineArgs
from kvbench.errors import UserError
from kvbench.spec import bounds as B

# Environment variables the emulated engine and its connectors read (vLLM / LMCache semantics).
_ENV_PREFIXES = ("LMCACHE_", "VLLM_")
_ENV_NAMES = ("PYTHONHASHSEED", "KVBENCH_KV_EVENTS_FORMAT")
_BLOCK_SIZES = B.VLLM_BLOCK_SIZES  # vLLM's BlockSize literal
_HASH_ALGOS = ("sha256", "sha256_cbor", "xxhash", "xxhash_cbor")
_VLLM_COMPAT = ("0.11", "0.26", "0.32")  # behaviour profiles (emulator/engine/compat.py)


@dataclass(slots=True)
class ServeOptions:
    """Everything one emulated engine process needs: the engine's args plus the HTTP front's."""

    engine_args: EngineArgs
    host: str = "127.0.0.1"
    port: int = 8000
    stream_interval: int = 1  # tokens coalesced per SSE chunk (vLLM's --stream-interval)
    tokenizer_dir: str | None = None  # a local HF tokenizer folder (needs `tokenizers`)
    engine_label: str = "0"  # the `engine` label of vLLM's metrics
    model_root: str | None = None  # /v1/models `root`: the model folder when MODEL is one


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
    p = _OneLineParser(
        prog="kvbench emulate serve",
        add_help=False,
        allow_abbrev=False,
        description="One emulated vLLM engine (vllm serve's flags and HTTP API; no GPU needed).",
    )
    add = p.add_argument
    add(
        "model",
        help="catalog model name as vLLM takes it (e.g. Qwen/Qwen3-8B), or a model folder whose "
        "config.json matches a catalog model (its tokenizer.json is then used)",
    )
    add("--hardware", default="H100-SXM", help="emulated GPU profile (default: H100-SXM)")
    add("--served-model-name", default=None, help="name in responses (default: MODEL)")
    add(
        "--tensor-parallel-size",
        "-tp",
        type=_positive_int("--tensor-parallel-size", B.MAX_TENSOR_PARALLEL),
        default=1,
        help="GPUs per engine (default: 1)",
    )
    add(
        "--max-num-seqs",
        "--max-num-seq",
        dest="max_num_seqs",
        type=_positive_int("--max-num-seqs", B.MAX_NUM_SEQS),
        default=None,
        help="max running requests (default: vLLM 0.11's: 1024 on H100/H200, else 256)",
    )
    add(
        "--max-num-batched-tokens",
        type=_positive_int("--max-num-batched-tokens"),
        default=None,
        help="tokens per step (default: vLLM's for the hardware and mode)",
    )
    add(
        "--max-model-len",
        type=_positive_int("--max-model-len"),
        default=None,
        help="context length (default: the model's)",
    )
    add(
        "--gpu-memory-utilization",
        type=_fraction("--gpu-memory-utilization"),
        default=0.9,
        help="fraction of GPU memory for weights + KV cache (default: 0.9)",
    )
    add(
        "--block-size",
        type=_choice("--block-size", _BLOCK_SIZES),
        default=16,
        help=f"KV block tokens, one of {', '.join(map(str, _BLOCK_SIZES))} (default: 16)",
    )
    add(
        "--num-gpu-blocks-override",
        type=_positive_int("--num-gpu-blocks-override", B.MAX_NUM_GPU_BLOCKS),
        default=None,
        help="GPU KV blocks (default: from memory and --gpu-memory-utilization)",
    )
    add(
        "--prefix-caching-hash-algo",
        type=_choice("--prefix-caching-hash-algo", _HASH_ALGOS),
        default="sha256",
        help=f"block hash, one of {', '.join(_HASH_ALGOS)} (default: sha256)",
    )
    add(
        "--enable-prefix-caching",
        dest="enable_prefix_caching",
        action="store_true",
        default=True,
        help="reuse cached prefix blocks (default: on)",
    )
    add(
        "--no-enable-prefix-caching",
        dest="enable_prefix_caching",
        action="store_false",
        help="turn prefix caching off (default: prefix caching on)",
    )
    add(
        "--enable-prompt-tokens-details",
        action="store_true",
        default=False,
        help="report usage.prompt_tokens_details.cached_tokens (default: off)",
    )
    add(
        "--kv-transfer-config",
        type=_json_object("--kv-transfer-config"),
        default=None,
        help="KV connector JSON, as vLLM takes it (default: none)",
    )
    add(
        "--kv-events-config",
        type=_json_object("--kv-events-config"),
        default=None,
        help="KV events JSON (ZMQ publisher), as vLLM takes it (default: none)",
    )
    add("--seed", type=int, default=0, help="sampling seed (default: 0)")
    add("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    add("--port", type=_port, default=8000, help="listen port, 0 = any free (default: 8000)")
    add(
        "--stream-interval",
        type=_positive_int("--stream-interval"),
        default=1,
        help="tokens per SSE chunk (default: 1)",
    )
    add(
        "--tokenizer",
        default=None,
        help="folder with a Hugging Face tokenizer.json (+ tokenizer_config.json) used for text "
        "prompts and chat templates (default: MODEL's folder if it has one, else a built-in "
        "approximate tokenizer)",
    )
    add(
        "--vllm-compat",
        type=_choice("--vllm-compat", _VLLM_COMPAT),
        default="0.11",
        help=f"vLLM behaviour and response shapes, one of {', '.join(_VLLM_COMPAT)} "
        "(default: 0.11)",
    )
    add("--help", "-h", action="help", help="show this help and exit")
    return p


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """MODEL as given: a catalog name, or a local folder matched to a catalog model."""

    catalog_name: str
    folder: Path | None


_SHAPE_KEYS = (
    ("num_hidden_layers", "num_layers"),
    ("hidden_size", "hidden_size"),
    ("num_attention_heads", "num_attention_heads"),
    ("num_key_value_heads", "num_kv_heads"),
    ("vocab_size", "vocab_size"),
)


def resolve_model(model: str) -> ResolvedModel:
    """A folder's config.json is matched to the catalog model of the same shape (layers, hidden,
    heads, KV heads, vocabulary): its cost and memory model is the catalog's."""
    folder = Path(model)
    if not folder.is_dir():
        return ResolvedModel(model, None)
    from kvbench.spec.catalogs import get_model, model_names

    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"model folder {folder}: cannot read config.json ({err})") from None
    wanted = tuple(config.get(key) for key, _ in _SHAPE_KEYS)
    for name in model_names():
        profile = get_model(name)
        if tuple(getattr(profile, attr) for _, attr in _SHAPE_KEYS) == wanted:
            return ResolvedModel(profile.name, folder)
    shape = ", ".join(f"{key}={value}" for (key, _), value in zip(_SHAPE_KEYS, wanted, strict=True))
    raise UserError(
        f"model folder {folder}: its config.json ({shape}) matches no catalog model; "
        "pass a catalog name as MODEL and --tokenizer FOLDER"
    )


def engine_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the process environment the engine and its connectors read."""
    return {k: v for k, v in environ.items() if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)}


def serve_help() -> str:
    return _build_parser().format_help()


def parse_serve_args(argv: list[str], environ: Mapping[str, str]) -> ServeOptions:
    ns = _build_parser().parse_args(argv)
    resolved = resolve_model(ns.model)
    tokenizer_dir = ns.tokenizer
    if tokenizer_dir is None and resolved.folder and (resolved.folder / "tokenizer.json").is_file():
        tokenizer_dir = str(resolved.folder)
    engine_args = EngineArgs(
        model=resolved.catalog_name,
        hardware=ns.hardware,
        served_model_name=ns.served_model_name or (ns.model if resolved.folder else None),
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
        tokenizer_dir=tokenizer_dir,
        model_root=str(resolved.folder) if resolved.folder else None,
    )
