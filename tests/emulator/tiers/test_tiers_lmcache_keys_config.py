"""LMCache chunk keys (checked against real CPython hashing) and config precedence."""

import os
import subprocess
import sys

import pytest

from kvbench.emulator.tiers.lmcache_config import load_lmcache_config
from kvbench.emulator.tiers.lmcache_keys import (
    NONE_HASH_PY312,
    ChunkedTokenDatabase,
    KeyFormat,
    chunk_hash,
    none_hash,
    parse_python_hash_seed,
)
from kvbench.errors import UserError


class _NoneLike:
    """Hashes like None does on CPython 3.12 (this test process may be 3.11)."""

    def __hash__(self):
        return NONE_HASH_PY312


@pytest.mark.parametrize("seed", [0, 123, 4294967295])
def test_none_hash_is_cpython_hash_of_the_seed_string(seed):
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    real = subprocess.run(
        [sys.executable, "-c", f"print(hash('{seed}'))"], env=env, capture_output=True, text=True
    )
    assert none_hash(seed, os.urandom) == int(real.stdout)


def test_chunk_hash_is_cpython_tuple_hash_with_none():
    prefix = none_hash(123, os.urandom)
    tokens = list(range(300, 556))
    assert chunk_hash(prefix, tokens) == hash((prefix, tuple(tokens), _NoneLike()))


def test_chunks_chain_and_keep_the_partial_tail():
    db = ChunkedTokenDatabase(chunk_size=4, save_unfull_chunk=True, init_hash=7)
    chunks = db.chunks([1, 2, 3, 4, 5, 6])
    assert [(c.start, c.end) for c in chunks] == [(0, 4), (4, 6)]
    assert chunks[1].chunk_hash == chunk_hash(chunk_hash(7, [1, 2, 3, 4]), [5, 6])
    assert [c.end for c in ChunkedTokenDatabase(4, False, 7).chunks([1, 2, 3, 4, 5, 6])] == [4]


def test_key_string_layout():
    fmt = KeyFormat("Qwen/Qwen3-32B", world_size=2)
    assert fmt.key(1, 0xABC) == "vllm@Qwen/Qwen3-32B@2@1@abc@bfloat16"
    assert fmt.key(0, -0x1F) == "vllm@Qwen/Qwen3-32B@2@0@-1f@bfloat16"


def test_python_hash_seed_parsing():
    assert parse_python_hash_seed({}) is None
    assert parse_python_hash_seed({"PYTHONHASHSEED": "random"}) is None
    assert parse_python_hash_seed({"PYTHONHASHSEED": "42"}) == 42
    with pytest.raises(UserError, match="PYTHONHASHSEED"):
        parse_python_hash_seed({"PYTHONHASHSEED": "abc"})


def test_config_env_then_extra_config_overrides():
    env = {
        "LMCACHE_CHUNK_SIZE": "128",
        "LMCACHE_SAVE_UNFULL_CHUNK": "false",
        "LMCACHE_LOG_LEVEL": "INFO",
    }
    config = load_lmcache_config(
        env, {"lmcache.chunk_size": 64, "lmcache.remote_url": "valkey://127.0.0.1:7000"}
    )
    assert (config.chunk_size, config.save_unfull_chunk, config.remote_scheme) == (
        64,
        False,
        "valkey",
    )
    assert config.max_local_cpu_size == 5.0 and config.max_local_cpu_bytes == 5 * 1024**3


def test_config_file_replaces_env(tmp_path):
    path = tmp_path / "lmcache.yaml"
    path.write_text("chunk_size: 512\nmax_local_cpu_size: 2.5\n")
    config = load_lmcache_config({"LMCACHE_CONFIG_FILE": str(path), "LMCACHE_CHUNK_SIZE": "16"}, {})
    assert (config.chunk_size, config.max_local_cpu_size) == (512, 2.5)


@pytest.mark.parametrize(
    "env, extra, message",
    [
        ({}, {"lmcache.cpu_blocks": 10}, "lmcache.cpu_blocks: unknown LMCache config key"),
        ({"LMCACHE_CHUNK_SIZE": "big"}, {}, "LMCACHE_CHUNK_SIZE"),
        ({}, {"lmcache.local_disk": "file:///tmp"}, "local_disk"),
        ({}, {"lmcache.remote_url": "lm://x:1"}, "remote_url"),
        ({"LMCACHE_CONFIG_FILE": "/nonexistent/lmcache.yaml"}, {}, "LMCACHE_CONFIG_FILE"),
    ],
)
def test_config_errors_name_the_source(env, extra, message):
    with pytest.raises(UserError, match=message):
        load_lmcache_config(env, extra)
