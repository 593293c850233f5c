"""Chained block hashes exactly as vLLM v1 computes them (0.11 `vllm/utils` sha256 / sha256_cbor,
`v1/core/kv_cache_utils.py` hash_block_tokens / init_none_hash / get_request_block_hasher).

- `sha256(x)      = hashlib.sha256(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL)).digest()`
- `sha256_cbor(x) = hashlib.sha256(cbor2.dumps(x, canonical=True)).digest()`
- block hash = H((parent_hash or NONE_HASH, tuple(block_token_ids), extra_keys)); the argument is a
  Python *tuple* of those three (cbor2 encodes a tuple as an array), extra_keys is None unless the
  request has a cache_salt, which vLLM puts in the first block only as the 1-tuple `(salt,)`.
- NONE_HASH = H(os.environ["PYTHONHASHSEED"]) (the seed hashed as a *string*). When PYTHONHASHSEED
  is unset: 32 random bytes in vLLM 0.11 (hashes differ on every process start), H("vllm-none-hash")
  in vLLM 0.32 for these cryptographic algorithms (`unseeded_seed`, see compat.py).
- Only full blocks are hashed; decode-generated tokens that fill a block are hashed too.
- KV events carry `int.from_bytes(h, "big") & (2**64 - 1)` (vLLM's default
  VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1), i.e. the last 8 bytes read big-endian.

Randomness (for the unset-seed case) comes from an injected `urandom` so tests stay deterministic.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import cbor2

from kvbench.errors import UserError

HashFn = Callable[[Any], bytes]
HASH_ALGOS = ("sha256", "sha256_cbor")
_UINT64_MASK = (1 << 64) - 1


def sha256(obj: Any) -> bytes:
    return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def sha256_cbor(obj: Any) -> bytes:
    return hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()


def get_hash_fn(algo: str) -> HashFn:
    if algo == "sha256":
        return sha256
    if algo == "sha256_cbor":
        return sha256_cbor
    raise UserError(f"--prefix-caching-hash-algo: {algo!r} is not one of {', '.join(HASH_ALGOS)}")


def none_hash(
    hash_fn: HashFn,
    env: Mapping[str, str],
    urandom: Callable[[int], bytes] = os.urandom,
    unseeded_seed: str | None = None,
) -> bytes:
    """vLLM's NONE_HASH: the root parent of every chain. Without PYTHONHASHSEED it is
    `hash_fn(unseeded_seed)` when one is given (vLLM 0.32), else `urandom(32)` (vLLM 0.11)."""
    seed = env.get("PYTHONHASHSEED")
    if seed is None:
        if unseeded_seed is None:
            return urandom(32)
        seed = unseeded_seed
    return hash_fn(seed)


def hash_block_tokens(
    hash_fn: HashFn,
    parent_hash: bytes,
    block_token_ids: Sequence[int],
    extra_keys: tuple | None = None,
) -> bytes:
    return hash_fn((parent_hash, tuple(block_token_ids), extra_keys))


def to_event_hash(block_hash: bytes) -> int:
    """The form vLLM publishes in KV events (low 64 bits, big-endian)."""
    return int.from_bytes(block_hash, "big") & _UINT64_MASK


class HashMemo:
    """A bounded cache of block hashes: the hash input `(parent, block tokens, extra)` -> its hash,
    per hash function. The functions are pure, so a hit is exactly what the function returns; one
    memo may serve every engine of a process (the simulated target's engines hash the same shared
    prefixes over and over). When a table reaches `max_entries` it is emptied (no LRU upkeep)."""

    __slots__ = ("max_entries", "_tables", "_sequences")

    RECENT_SEQUENCES = 64  # whole sequences remembered by `sequence_chain`

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._tables: dict[HashFn, dict[tuple, bytes]] = {}
        # (hash_fn, parent, block size, first extra, length, last block) -> (tokens, hashes)
        self._sequences: dict[tuple, tuple[list[int], list[bytes]]] = {}

    def table(self, hash_fn: HashFn) -> dict[tuple, bytes]:
        return self._tables.setdefault(hash_fn, {})

    def chain(self, hash_fn: HashFn, parent: bytes, blocks: Iterable[tuple]) -> Iterator[bytes]:
        """The hash chain over `blocks` (each `(block tokens, extra)`) from `parent`: the hashes
        `hash_fn((parent, tokens, extra))` would give, looked up where already computed."""
        table = self.table(hash_fn)
        get = table.get
        for tokens, extra in blocks:
            key = (parent, tokens, extra)
            found = get(key)
            if found is None:
                found = hash_fn(key)
                if len(table) >= self.max_entries:
                    table.clear()
                table[key] = found
            parent = found
            yield parent

    def sequence_chain(
        self,
        hash_fn: HashFn,
        parent: bytes,
        token_ids: Sequence[int],
        block_size: int,
        first_extra: tuple | None = None,
    ) -> list[bytes]:
        """The chain over every full block of `token_ids` (the first block's extra
        `first_extra`, the others' None), as `chain` gives it. The last `RECENT_SEQUENCES`
        sequences are remembered whole: the same tokens again (the simulated router hashes a
        prompt, then its engine does) are answered by one list comparison instead of a memo
        lookup per block. The list returned is shared: read it, never change it."""
        tail = tuple(token_ids[-block_size:])
        key = (hash_fn, parent, block_size, first_extra, len(token_ids), tail)
        known = self._sequences.get(key)
        if known is not None and known[0] == token_ids:
            return known[1]
        hashes = self._whole_chain(hash_fn, parent, token_ids, block_size, first_extra)
        sequences = self._sequences
        sequences.pop(key, None)
        if len(sequences) >= self.RECENT_SEQUENCES:
            del sequences[next(iter(sequences))]  # the oldest
        sequences[key] = (list(token_ids), hashes)
        return hashes

    def _whole_chain(
        self,
        hash_fn: HashFn,
        parent: bytes,
        token_ids: Sequence[int],
        block_size: int,
        first_extra: tuple | None,
    ) -> list[bytes]:
        """`list(chain(hash_fn, parent, blocks))` over every full block of `token_ids` (the first
        block's extra `first_extra`, the others' None), each memo key built once, in one loop."""
        table = self.table(hash_fn)
        get = table.get
        hashes: list[bytes] = []
        append = hashes.append
        extra = first_extra
        for start in range(0, len(token_ids) - block_size + 1, block_size):
            key = (parent, tuple(token_ids[start : start + block_size]), extra)
            extra = None
            found = get(key)
            if found is None:
                found = hash_fn(key)
                if len(table) >= self.max_entries:
                    table.clear()
                table[key] = found
            parent = found
            append(found)
        return hashes


class BlockHasher:
    """Extends a request's list of block hashes as its tokens fill blocks.

    Contract: `extend(token_ids, block_hashes, cache_salt)` appends the hash of every full block of
    `token_ids` not yet in `block_hashes` (block i covers tokens [i*bs, (i+1)*bs)). A block size
    of 0 turns hashing off. With a `memo`, hashes already computed are looked up (same values).
    """

    __slots__ = ("hash_fn", "root_hash", "block_size", "memo")

    def __init__(
        self, hash_fn: HashFn, root_hash: bytes, block_size: int, memo: HashMemo | None = None
    ) -> None:
        self.hash_fn = hash_fn
        self.root_hash = root_hash
        self.block_size = block_size
        self.memo = memo

    def extend(
        self, token_ids: Sequence[int], block_hashes: list[bytes], cache_salt: str | None
    ) -> None:
        bs = self.block_size
        if not bs:  # hashing off: no prefix caching and no connector
            return
        start = len(block_hashes) * bs
        if start + bs > len(token_ids):
            return
        hash_fn = self.hash_fn
        parent = block_hashes[-1] if block_hashes else self.root_hash
        memo = self.memo
        if memo is None:
            while start + bs <= len(token_ids):
                extra = (cache_salt,) if (start == 0 and cache_salt) else None
                parent = hash_fn((parent, tuple(token_ids[start : start + bs]), extra))
                block_hashes.append(parent)
                start += bs
            return
        if start == 0:  # a whole prompt: maybe just hashed (by the router, sharing the memo)
            first_extra = (cache_salt,) if cache_salt else None
            block_hashes += memo.sequence_chain(hash_fn, parent, token_ids, bs, first_extra)
            return
        blocks = (
            (tuple(token_ids[i : i + bs]), (cache_salt,) if (i == 0 and cache_salt) else None)
            for i in range(start, len(token_ids) - bs + 1, bs)
        )
        block_hashes.extend(memo.chain(hash_fn, parent, blocks))
