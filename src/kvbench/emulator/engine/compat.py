"""Behaviour profiles: which vLLM release's observable engine behaviour the emulator follows.

`--vllm-compat 0.11` (the default) is vLLM 0.11.x, the version the seeds' deployments ran.
`--vllm-compat 0.32` is vLLM 0.32 (the CPU build the parity suite compares against). The profiles
differ in exactly these observable behaviours (each cites the upstream change that introduced it):

- free order (`free_uncached_first`): 0.32 `BlockPool.free_blocks` puts freed blocks that hold no
  hash (a request's partial last block; every block when caching is off) at the *head* of the free
  queue (reused first) and cached blocks at the tail (LRU); 0.11 appends all of them to the tail.
  vllm-project/vllm#42656 "Apply LRU policy only to proper cache entries".
- when local prefix-cache lookups are counted (`count_lookups_at_admission`): 0.32 records
  vllm:prefix_cache_queries/hits once, after the request's slots are allocated; 0.11 records in
  `get_computed_blocks`, so a request that waits for blocks is counted on every step it is retried.
  vllm-project/vllm#48860 (fixes #43736).
- NONE_HASH without PYTHONHASHSEED (`unseeded_none_hash_seed`): 0.32 hashes the fixed string
  "vllm-none-hash" for sha256 / sha256_cbor; 0.11 draws os.urandom(32). vllm-project/vllm#51875.
- preempted requests' lookups (`count_preempted_separately`): counted apart from
  vllm:prefix_cache_* since 0.11.2 (and in 0.32); 0.11.0 counted them in. Under "0.11" the caller's
  switch chooses between 0.11.0 and 0.11.2; "0.32" always counts them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvbench.errors import UserError

VLLM_COMPAT_VERSIONS = ("0.11", "0.26", "0.32")
DEFAULT_NONE_HASH_SEED = (
    "vllm-none-hash"  # vLLM >= #51875: the root seed when PYTHONHASHSEED is unset
)


@dataclass(frozen=True, slots=True)
class VllmCompat:
    """One profile's switches; built by `compat_profile`, passed to each engine part explicitly."""

    version: str
    free_uncached_first: bool
    count_lookups_at_admission: bool
    unseeded_none_hash_seed: str | None  # None: random NONE_HASH when PYTHONHASHSEED is unset
    count_preempted_separately: bool


def compat_profile(version: str, count_preempted_separately: bool = True) -> VllmCompat:
    """The profile for `--vllm-compat VERSION`. `count_preempted_separately` picks 0.11.2 (True)
    or 0.11.0 (False) under "0.11"; "0.32" counts preempted lookups apart regardless."""
    if version == "0.11":
        return VllmCompat(
            version,
            free_uncached_first=False,
            count_lookups_at_admission=False,
            unseeded_none_hash_seed=None,
            count_preempted_separately=count_preempted_separately,
        )
    if version == "0.26":
        # vLLM 0.26.0 (read from its wheel): #42656 is in (block_pool.free_blocks prepends blocks
        # without a hash), lookups are still counted in get_computed_blocks (#48860 not in), and
        # NONE_HASH is os.urandom(32) without PYTHONHASHSEED (#51875 not in).
        return VllmCompat(
            version,
            free_uncached_first=True,
            count_lookups_at_admission=False,
            unseeded_none_hash_seed=None,
            count_preempted_separately=True,
        )
    if version == "0.32":
        return VllmCompat(
            version,
            free_uncached_first=True,
            count_lookups_at_admission=True,
            unseeded_none_hash_seed=DEFAULT_NONE_HASH_SEED,
            count_preempted_separately=True,
        )
    raise UserError(f"--vllm-compat: {version!r} is not one of {', '.join(VLLM_COMPAT_VERSIONS)}")


def compat_for_version(vllm_version: str) -> str:
    """The behaviour profile closest to a real vLLM version: the newest profile not newer than it
    (versions before 0.26 get "0.11", the oldest profile)."""
    import re

    match = re.match(r"(\d+)\.(\d+)", vllm_version)
    if match is None:
        raise UserError(f"vllm_version: {vllm_version!r} is not a vLLM version")
    wanted = (int(match.group(1)), int(match.group(2)))
    best = VLLM_COMPAT_VERSIONS[0]
    for profile in VLLM_COMPAT_VERSIONS:
        major, minor = (int(part) for part in profile.split("."))
        if (major, minor) <= wanted:
            best = profile
    return best
