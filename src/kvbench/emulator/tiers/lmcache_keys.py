"""LMCache 0.3.9 chunk keys: prefix-chained chunk hashes and CacheEngineKey strings.

LMCache's ChunkedTokenDatabase (v1/token_database.py) splits tokens into `chunk_size` chunks (the
last partial chunk too when `save_unfull_chunk`) and chains them:
    h_0 = NONE_HASH;  h_i = hash_fn((h_{i-1}, tuple(chunk_i_tokens), None))
With the default `pre_caching_hash_algorithm: builtin`, vLLM 0.11 knows no such hash function, so
LMCache falls back to Python's builtin `hash()`, and NONE_HASH comes from vLLM's init_none_hash:
`hash(os.environ["PYTHONHASHSEED"])` (a str hash, so it depends on the seed), or 32 random bytes
when PYTHONHASHSEED is unset (keys then differ on every process start).

This module reproduces CPython 3.12's builtin hash for exactly these values, in any process: str
hashing with SipHash-1-3 keyed from PYTHONHASHSEED (CPython's lcg_urandom), the xxHash-style tuple
hash, int hashing (seed independent) and hash(None) == 0xFCA86420 (constant since 3.12; on 3.11 it
was an address, which made LMCache keys process-specific there). Keys are therefore the ones a real
vLLM 0.11 + LMCache 0.3.9 on Python 3.12 with the same PYTHONHASHSEED writes. The key string is
`fmt@model_name@world_size@worker_id@<chunk_hash:x>@dtype` (a negative hash prints as "-<hex>").
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kvbench.errors import UserError

_MASK64 = (1 << 64) - 1
_XXPRIME_1 = 11400714785074694791
_XXPRIME_2 = 14029467366897019727
_XXPRIME_5 = 2870177450012600261
NONE_HASH_PY312 = 0xFCA86420


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK64


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _MASK64
    v1 = _rotl(v1, 13)
    v1 ^= v0
    v0 = _rotl(v0, 32)  # noqa: E702
    v2 = (v2 + v3) & _MASK64
    v3 = _rotl(v3, 16)
    v3 ^= v2  # noqa: E702
    v0 = (v0 + v3) & _MASK64
    v3 = _rotl(v3, 21)
    v3 ^= v0  # noqa: E702
    v2 = (v2 + v1) & _MASK64
    v1 = _rotl(v1, 17)
    v1 ^= v2
    v2 = _rotl(v2, 32)  # noqa: E702
    return v0, v1, v2, v3


def siphash13(k0: int, k1: int, data: bytes) -> int:
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573
    full = len(data) // 8 * 8
    for offset in range(0, full, 8):
        (word,) = struct.unpack_from("<Q", data, offset)
        v3 ^= word
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= word
    tail = int.from_bytes(data[full:], "little") | ((len(data) & 0xFF) << 56)
    v3 ^= tail
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= tail
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return (v0 ^ v1 ^ v2 ^ v3) & _MASK64


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def hash_secret_for_seed(seed: int) -> tuple[int, int]:
    """CPython's SipHash key for PYTHONHASHSEED=seed (lcg_urandom over the secret; 0 = all zero)."""
    if seed == 0:
        return 0, 0
    x, out = seed, bytearray()
    for _ in range(16):
        x = (x * 214013 + 2531011) & 0xFFFFFFFF
        out.append((x >> 16) & 0xFF)
    return struct.unpack("<QQ", bytes(out))


def py_str_hash(text: str, seed: int) -> int:
    """hash(text) in a CPython 3.11+/3.12 process started with PYTHONHASHSEED=seed."""
    if not text:
        return 0
    # CPython hashes the compact representation: 1, 2 or 4 bytes per code point.
    width = 1 if max(map(ord, text)) < 256 else (2 if max(map(ord, text)) < 65536 else 4)
    data = text.encode({1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[width])
    value = _signed(siphash13(*hash_secret_for_seed(seed), data))
    return -2 if value == -1 else value


def py_tuple_hash(item_hashes: Sequence[int]) -> int:
    """CPython's tuple hash given the hashes of its items."""
    acc = _XXPRIME_5
    for item in item_hashes:
        acc = (acc + (item & _MASK64) * _XXPRIME_2) & _MASK64
        acc = _rotl(acc, 31)
        acc = (acc * _XXPRIME_1) & _MASK64
    acc = (acc + (len(item_hashes) ^ (_XXPRIME_5 ^ 3527539))) & _MASK64
    if acc == _MASK64:
        return 1546275796
    return _signed(acc)


def parse_python_hash_seed(env: dict[str, str]) -> int | None:
    """PYTHONHASHSEED as CPython reads it: None when unset or "random"; else 0..4294967295."""
    raw = env.get("PYTHONHASHSEED")
    if raw is None or raw == "random":
        return None
    if not raw.isdigit() or int(raw) > 4294967295:
        raise UserError(
            f'PYTHONHASHSEED: must be "random" or an integer in [0; 4294967295], got {raw!r}'
        )
    return int(raw)


def none_hash(seed: int | None, random_bytes: Callable[[int], bytes]) -> int:
    """NONE_HASH as LMCache's builtin hash sees it (hash of it, for chaining)."""
    if seed is None:  # vLLM: os.urandom(32); its builtin hash is a random 64-bit value
        return _signed(int.from_bytes(random_bytes(8), "little"))
    return py_str_hash(str(seed), seed)


def chunk_hash(prefix_hash: int, chunk_tokens: Sequence[int]) -> int:
    """hash((prefix_hash, tuple(chunk_tokens), None)) under CPython 3.12."""
    return py_tuple_hash([hash(prefix_hash), hash(tuple(chunk_tokens)), NONE_HASH_PY312])


@dataclass(frozen=True, slots=True)
class Chunk:
    start: int
    end: int
    chunk_hash: int

    @property
    def num_tokens(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class ChunkedTokenDatabase:
    chunk_size: int
    save_unfull_chunk: bool
    init_hash: int

    def chunks(self, tokens: Sequence[int]) -> list[Chunk]:
        end = len(tokens) if self.save_unfull_chunk else len(tokens) - len(tokens) % self.chunk_size
        out, prefix = [], self.init_hash
        for start in range(0, end, self.chunk_size):
            prefix = chunk_hash(prefix, tokens[start : start + self.chunk_size])
            out.append(Chunk(start, min(start + self.chunk_size, len(tokens)), prefix))
        return out


@dataclass(frozen=True, slots=True)
class KeyFormat:
    """CacheEngineKey fields other than the chunk hash (integration/vllm/utils.py)."""

    model_name: str
    world_size: int
    kv_dtype: str = "bfloat16"
    fmt: str = "vllm"

    def key(self, worker_id: int, chunk_hash_value: int) -> str:
        return f"{self.fmt}@{self.model_name}@{self.world_size}@{worker_id}@{chunk_hash_value:x}@{self.kv_dtype}"
