"""`build_engine(args)`: validate `vllm serve`-style arguments and assemble an EmulatedEngine.

Defaults follow vLLM 0.11 for the online-serving case (`vllm serve`, UsageContext.OPENAI_API_SERVER,
`EngineArgs.get_batch_defaults`): max_num_batched_tokens = 8192 on GPUs with >= 70 GiB that are not
A100s (H100, H200), else 2048; max_num_seqs (when passed as None) = 1024 on those GPUs, else 256.
EngineArgs.max_num_seqs defaults to None, i.e. vLLM's default. max_model_len defaults to the model's max_position_embeddings. Every bad value is a
UserError naming the flag.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from kvbench.emulator.engine.block_pool import BlockPool
from kvbench.emulator.engine.compat import compat_profile
from kvbench.emulator.engine.connector import ConnectorFacts, KVConnector
from kvbench.emulator.engine.cost_model import CostModel, CostParams, num_gpu_blocks_by_memory
from kvbench.emulator.engine.engine import EmulatedEngine
from kvbench.emulator.engine.hashing import BlockHasher, HashMemo, get_hash_fn, none_hash
from kvbench.emulator.engine.interface import EngineArgs
from kvbench.emulator.engine.kv_manager import KVCacheManager
from kvbench.emulator.engine.scheduler import Scheduler, SchedulerLimits
from kvbench.errors import UserError
from kvbench.spec.bounds import VLLM_BLOCK_SIZES, kv_blocks_fit, max_kv_blocks
from kvbench.spec.catalogs import HardwareProfile, ModelProfile, get_hardware, get_model

BLOCK_SIZES = VLLM_BLOCK_SIZES  # vLLM's CacheConfig BlockSize literal


def _large_gpu(hardware: HardwareProfile) -> bool:
    """vLLM's test for its bigger defaults: >= 70 GiB of device memory and not an A100."""
    return hardware.hbm_gib >= 70 and "a100" not in hardware.name.lower()


def default_max_num_batched_tokens(hardware: HardwareProfile) -> int:
    return 8192 if _large_gpu(hardware) else 2048


def default_max_num_seqs(hardware: HardwareProfile) -> int:
    return 1024 if _large_gpu(hardware) else 256


def _max_num_seqs(args: EngineArgs) -> int:
    """max_num_seqs once check_engine_args resolved vLLM's default (None) for the hardware."""
    assert args.max_num_seqs is not None, "check_engine_args resolves max_num_seqs first"
    return args.max_num_seqs


def _check_args(args: EngineArgs, model: ModelProfile) -> None:
    if args.block_size not in BLOCK_SIZES:
        raise UserError(
            f"--block-size: {args.block_size} is not one of {', '.join(map(str, BLOCK_SIZES))}"
        )
    tp = args.tensor_parallel_size
    if tp < 1 or model.num_attention_heads % tp:  # KV heads are replicated when tp > num_kv_heads
        raise UserError(
            f"--tensor-parallel-size: {tp} does not divide the {model.num_attention_heads} "
            f"attention heads of {model.name}"
        )
    if _max_num_seqs(args) < 1:
        raise UserError(f"--max-num-seqs: must be >= 1, got {_max_num_seqs(args)}")
    if not 0.0 < args.gpu_memory_utilization <= 1.0:
        raise UserError(
            f"--gpu-memory-utilization: must be in (0, 1], got {args.gpu_memory_utilization}"
        )
    if args.num_gpu_blocks_override is not None and args.num_gpu_blocks_override < 2:
        raise UserError(
            f"--num-gpu-blocks-override: must be >= 2, got {args.num_gpu_blocks_override}"
        )
    if args.max_model_len is not None and not 1 < args.max_model_len <= model.max_context_tokens:
        raise UserError(
            f"--max-model-len: {args.max_model_len} is outside 2..{model.max_context_tokens} "
            f"(the context length of {model.name})"
        )


def _batched_tokens(args: EngineArgs, hardware: HardwareProfile) -> int:
    value = args.max_num_batched_tokens
    if value is None:
        value = default_max_num_batched_tokens(hardware)
    if value < 1:
        raise UserError(f"--max-num-batched-tokens: must be >= 1, got {value}")
    if value < _max_num_seqs(args):
        raise UserError(
            f"--max-num-batched-tokens: {value} is smaller than --max-num-seqs {_max_num_seqs(args)}"
        )
    return value


def _num_gpu_blocks(
    args: EngineArgs,
    model: ModelProfile,
    hardware: HardwareProfile,
    batched: int,
    max_model_len: int,
    params: CostParams,
) -> int:
    if args.num_gpu_blocks_override is not None:
        num_blocks = args.num_gpu_blocks_override
        tp = args.tensor_parallel_size
        if not kv_blocks_fit(
            num_blocks, args.block_size, model.kv_bytes_per_token, hardware.hbm_bytes, tp
        ):
            most = max_kv_blocks(args.block_size, model.kv_bytes_per_token, hardware.hbm_bytes, tp)
            raise UserError(
                f"--num-gpu-blocks-override: {num_blocks} blocks of {args.block_size} tokens of "
                f"{model.name} need more than the memory of {tp} x {hardware.name} "
                f"(at most {most} blocks)"
            )
    else:
        num_blocks = num_gpu_blocks_by_memory(
            model,
            hardware,
            args.tensor_parallel_size,
            args.block_size,
            args.gpu_memory_utilization,
            batched,
            _max_num_seqs(args),
            params,
        )
        if num_blocks < 2:
            raise UserError(
                f"--gpu-memory-utilization: {model.name} leaves no room for KV cache on "
                f"{args.tensor_parallel_size} x {hardware.name}"
            )
    if num_blocks * args.block_size < max_model_len:  # vLLM: one max-length request must fit
        raise UserError(
            f"--max-model-len: {max_model_len} tokens need more KV cache than the "
            f"{num_blocks} blocks of {args.block_size} tokens; lower --max-model-len"
        )
    return num_blocks


def _build_connector(
    args: EngineArgs,
    facts: ConnectorFacts,
    urandom: Callable[[int], bytes],
    remote_timer: Callable[[], float],
) -> KVConnector:
    try:
        from kvbench.emulator.tiers.factory import build_connector
    except ImportError as err:
        raise UserError(f"--kv-transfer-config: KV connectors are not available ({err})") from None
    try:
        return build_connector(args, facts, urandom=urandom, timer=remote_timer)
    except UserError:
        raise
    except (KeyError, ValueError, TypeError) as err:
        raise UserError(f"--kv-transfer-config: {err}") from None


@dataclasses.dataclass(frozen=True)
class CheckedEngineArgs:
    """Engine arguments after every check, with vLLM's defaults filled in."""

    args: EngineArgs
    model: ModelProfile
    hardware: HardwareProfile
    max_num_batched_tokens: int
    max_model_len: int
    num_gpu_blocks: int


def check_engine_args(
    args: EngineArgs, cost_params: CostParams = CostParams()
) -> CheckedEngineArgs:
    """Every check `build_engine` makes, allocating nothing (a spec is checked with it at load)."""
    model = get_model(args.model)
    hardware = get_hardware(args.hardware)
    if args.max_num_seqs is None:
        args = dataclasses.replace(args, max_num_seqs=default_max_num_seqs(hardware))
    _check_args(args, model)
    get_hash_fn(args.prefix_caching_hash_algo)
    batched = _batched_tokens(args, hardware)
    max_model_len = args.max_model_len or model.max_context_tokens
    num_gpu_blocks = _num_gpu_blocks(args, model, hardware, batched, max_model_len, cost_params)
    return CheckedEngineArgs(args, model, hardware, batched, max_model_len, num_gpu_blocks)


def cost_params_for(hardware: HardwareProfile) -> CostParams:
    """The cost-model factors of a hardware profile: its calibrated overrides on the defaults."""
    overrides: dict[str, Any] = dict(hardware.cost_overrides)  # names checked by the catalog
    return dataclasses.replace(CostParams(), **overrides)


def build_engine(
    args: EngineArgs,
    urandom: Callable[[int], bytes] = os.urandom,
    cost_params: CostParams | None = None,
    count_preempted_separately: bool = True,
    check_invariants: bool = True,
    remote_timer: Callable[[], float] = time.perf_counter,
    hash_memo: HashMemo | None = None,
) -> EmulatedEngine:
    """`args.vllm_compat` picks the behaviour profile (compat.py: "0.11" or "0.32").
    `urandom` seeds NONE_HASH when PYTHONHASHSEED is unset (profile "0.11"). `count_preempted_separately`
    (profile "0.11" only; "0.32" always counts them apart): True counts prefix-cache lookups of
    preempted requests apart (vLLM >= 0.11.2), False counts them in vllm:prefix_cache_* (vLLM 0.11.0).
    `remote_timer` times an LMCache remote store's round trips (the simulated target passes a
    modelled one so the round trips cost virtual time, not wall time). `hash_memo` caches block
    hashes (same values; the simulated target shares one between its engines)."""
    compat = compat_profile(args.vllm_compat, count_preempted_separately)
    if cost_params is None:  # the hardware profile's calibrated factors, else the defaults
        cost_params = cost_params_for(get_hardware(args.hardware))
    checked = check_engine_args(args, cost_params)
    args, model, hardware = checked.args, checked.model, checked.hardware
    batched, max_model_len = checked.max_num_batched_tokens, checked.max_model_len
    num_gpu_blocks = checked.num_gpu_blocks
    hash_fn = get_hash_fn(args.prefix_caching_hash_algo)

    connector = None
    if args.kv_transfer_config:
        connector = _build_connector(
            args,
            ConnectorFacts(
                model_name=model.name,
                gpu_block_size=args.block_size,
                kv_bytes_per_token=model.kv_bytes_per_token,
                tensor_parallel_size=args.tensor_parallel_size,
                host_link_bytes_per_s=hardware.host_link_bytes_per_s,
                kv_dtype=model.kv_dtype,
                num_gpu_blocks=num_gpu_blocks,
                lmcache_copy_bytes_per_s=cost_params.lmcache_copy_bytes_per_s,
                lmcache_chunk_overhead_s=cost_params.lmcache_chunk_overhead_s,
                lmcache_per_request_overhead_s=cost_params.lmcache_per_request_overhead_s,
                lmcache_remote_bytes_per_s=cost_params.lmcache_remote_bytes_per_s,
            ),
            urandom,
            remote_timer,
        )

    pool = BlockPool(
        num_gpu_blocks,
        enable_caching=args.enable_prefix_caching,
        block_size=args.block_size,
        free_uncached_first=compat.free_uncached_first,
    )
    kv = KVCacheManager(
        pool,
        args.block_size,
        max_model_len,
        enable_caching=args.enable_prefix_caching,
        count_preempted_separately=compat.count_preempted_separately,
        count_lookups_at_admission=compat.count_lookups_at_admission,
    )
    limits = SchedulerLimits(
        _max_num_seqs(args),
        batched,
        max_model_len,
        args.block_size,
    )
    scheduler = Scheduler(limits, kv, connector, check_invariants=check_invariants)
    # vLLM hashes blocks when prefix caching is on or a connector needs the hashes.
    hashing_on = args.enable_prefix_caching or connector is not None
    root_hash = none_hash(hash_fn, args.env, urandom, unseeded_seed=compat.unseeded_none_hash_seed)
    hasher = BlockHasher(hash_fn, root_hash, args.block_size if hashing_on else 0, hash_memo)
    cost = CostModel(
        model,
        hardware,
        args.tensor_parallel_size,
        cost_params,
        with_connector=connector is not None,
    )
    return EmulatedEngine(
        scheduler,
        pool,
        kv,
        cost,
        hasher,
        args.generated_vocab_size or model.vocab_size,
        max_model_len,
        connector,
    )
