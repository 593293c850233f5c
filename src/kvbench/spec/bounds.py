"""Physical upper bounds for every number a user can give kvbench (spec fields and CLI flags).

Contract: a value past one of these bounds cannot describe a real experiment on real hardware, so
it is rejected when the spec (or flag) is loaded, before anything is allocated or started. Each
bound is generous (well beyond the largest deployment the field describes) but finite, so that no
input can make kvbench allocate without limit, spin up without limit, or wait forever.

Where a bound comes from a fact of the field, the comment says which.
"""

from __future__ import annotations

import math

# vLLM's CacheConfig `BlockSize` literal (vllm/config/cache.py): the block sizes it accepts.
VLLM_BLOCK_SIZES = (1, 8, 16, 32, 64, 128, 256)

# Token counts: the longest context any served model has today is 10M tokens (Llama 4 Scout).
MAX_TOKENS = 10_000_000
# Concurrent streams (or req/s) one load generator offers: far past what one host's sockets carry.
MAX_LOAD_LEVEL = 100_000
MAX_LEVELS = 1_000  # load levels in one spec
# Engines kvbench starts on one host (emulated / vllm), or replicas it asks Kubernetes for.
MAX_LOCAL_ENGINES = 64
MAX_K8S_REPLICAS = 1_024
MAX_TENSOR_PARALLEL = 64  # GPUs per engine (8-GPU nodes x 8 for multi-node TP)
MAX_NUM_SEQS = 65_536
MAX_NUM_GPU_BLOCKS = 2**31 - 1  # vLLM's block ids are int32
# Durations: a week is longer than any benchmark cell anyone runs; infinities and NaN never pass.
MAX_DURATION_S = 7 * 24 * 3600.0
MAX_REQUEST_TIMEOUT_S = 24 * 3600.0
MIN_COLLECT_INTERVAL_S = 0.01
MAX_REQUESTS_PER_LEVEL = 10_000_000
MAX_CONVERSATIONS = 1_000_000
MAX_TURNS = 10_000
MAX_PREFIX_COUNT = 1_000_000
MAX_REPEATS = 1_000
MAX_SWEEP_SIZE = 1_000
MAX_CELLS = 100_000  # cells of one experiment matrix (each runs for seconds at least)
MAX_WORKING_SET_FACTOR = 1_000.0
# Tokens a generated workload may hold in memory (prefixes + every turn's question): ~0.8 GB of
# int32 token ids; a workload past it would exhaust the host before the first request.
MAX_WORKLOAD_TOKENS = 200_000_000
MAX_SEED = 2**32 - 1  # numpy's SeedSequence takes non-negative ints; 32 bits is the portable range
MAX_NAME_CHARS = 200
MAX_SPEC_BYTES = 10 * 2**20  # a spec or scenario file larger than 10 MiB is not a spec
MAX_YAML_NODES = 200_000  # nodes after alias expansion (a bundled spec has ~100)


def finite(value: float) -> bool:
    return math.isfinite(value)


def kv_blocks_fit(
    num_blocks: int,
    block_size_tokens: int,
    kv_bytes_per_token: int,
    hbm_bytes: int,
    tensor_parallel_size: int,
) -> bool:
    """True when `num_blocks` KV blocks fit in the GPU memory of one engine (all its TP ranks).

    kv_bytes_per_token is the whole model's (every layer, every KV head); tensor parallelism splits
    it over `tensor_parallel_size` GPUs of `hbm_bytes` each."""
    needed_bytes = num_blocks * block_size_tokens * kv_bytes_per_token
    return needed_bytes <= hbm_bytes * tensor_parallel_size


def max_kv_blocks(
    block_size_tokens: int, kv_bytes_per_token: int, hbm_bytes: int, tensor_parallel_size: int
) -> int:
    """The most KV blocks one engine's GPUs could hold if they held nothing else."""
    return (hbm_bytes * tensor_parallel_size) // (block_size_tokens * kv_bytes_per_token)
