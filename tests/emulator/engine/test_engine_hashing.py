"""Block hashes must equal vLLM's, computed here independently with hashlib / pickle / cbor2."""

from __future__ import annotations

import hashlib
import pickle

import cbor2
import pytest
from engine_testlib import make_engine, make_request

from kvbench.emulator.engine.hashing import (
    BlockHasher,
    HashMemo,
    get_hash_fn,
    none_hash,
    to_event_hash,
)
from kvbench.emulator.engine.interface import BlockStored
from kvbench.errors import UserError


def vllm_sha256(obj) -> bytes:
    return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def vllm_sha256_cbor(obj) -> bytes:
    return hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()


REFERENCE = {"sha256": vllm_sha256, "sha256_cbor": vllm_sha256_cbor}


@pytest.mark.parametrize("algo", ["sha256", "sha256_cbor"])
def test_chain_of_full_blocks_matches_vllm(algo):
    ref = REFERENCE[algo]
    tokens = list(range(100, 140))  # 2 full blocks of 16 + 8 tokens that are never hashed
    root = ref("123")  # PYTHONHASHSEED is hashed as a string
    first = ref((root, tuple(tokens[:16]), None))
    second = ref((first, tuple(tokens[16:32]), None))

    hasher = BlockHasher(
        get_hash_fn(algo), none_hash(get_hash_fn(algo), {"PYTHONHASHSEED": "123"}), 16
    )
    hashes: list[bytes] = []
    hasher.extend(tokens, hashes, cache_salt=None)
    assert hashes == [first, second]


def test_cbor_encodes_the_tuple_as_an_array_of_parent_tokens_extra():
    # The cbor path must hash exactly [bytes(32), [tokens...], null], as llm-d recomputes it.
    root = vllm_sha256_cbor("0")
    encoded = cbor2.dumps([root, [1, 2, 3, 4], None], canonical=True)
    hasher = BlockHasher(get_hash_fn("sha256_cbor"), root, 4)
    hashes: list[bytes] = []
    hasher.extend([1, 2, 3, 4], hashes, None)
    assert hashes == [hashlib.sha256(encoded).digest()]


def test_cache_salt_goes_into_the_first_block_only():
    root = vllm_sha256("0")
    first = vllm_sha256((root, tuple(range(16)), ("salt-a",)))
    second = vllm_sha256((first, tuple(range(16, 32)), None))
    hasher = BlockHasher(get_hash_fn("sha256"), root, 16)
    hashes: list[bytes] = []
    hasher.extend(list(range(32)), hashes, "salt-a")
    assert hashes == [first, second]


def test_extend_adds_decode_filled_blocks_incrementally():
    root = vllm_sha256("0")
    hasher = BlockHasher(get_hash_fn("sha256"), root, 4)
    tokens, hashes = [5, 6, 7], []
    hasher.extend(tokens, hashes, None)
    assert hashes == []  # partial block: not hashed
    tokens.append(8)
    hasher.extend(tokens, hashes, None)
    assert hashes == [vllm_sha256((root, (5, 6, 7, 8), None))]


def test_unset_pythonhashseed_uses_random_root():
    calls = []

    def fake_urandom(n):
        calls.append(n)
        return b"\x01" * n

    assert none_hash(vllm_sha256, {}, fake_urandom) == b"\x01" * 32
    assert calls == [32]


def test_event_hash_is_low_64_bits_big_endian():
    digest = bytes(range(32))
    assert to_event_hash(digest) == int.from_bytes(bytes(range(24, 32)), "big")


def test_unknown_algo_names_the_flag():
    with pytest.raises(UserError, match="--prefix-caching-hash-algo"):
        get_hash_fn("builtin")


@pytest.mark.parametrize("algo", ["sha256", "sha256_cbor"])
def test_engine_block_stored_event_carries_vllm_hashes(algo):
    ref = REFERENCE[algo]
    engine = make_engine(prefix_caching_hash_algo=algo, env={"PYTHONHASHSEED": "42"})
    prompt = list(range(1, 41))  # 2 full blocks
    engine.add_request(make_request("r", prompt, max_tokens=1))
    result = engine.step(0.0)
    stored = [e for e in result.kv_events if isinstance(e, BlockStored)]
    root = ref("42")
    h1 = ref((root, tuple(prompt[:16]), None))
    h2 = ref((h1, tuple(prompt[16:32]), None))
    assert len(stored) == 1
    assert stored[0].block_hashes == [to_event_hash(h1), to_event_hash(h2)]
    assert stored[0].parent_block_hash is None
    assert stored[0].token_ids == prompt[:32]
    assert stored[0].block_size == 16 and stored[0].medium == "GPU"


@pytest.mark.parametrize("algo", ["sha256", "sha256_cbor"])
def test_memo_gives_the_hashes_the_function_gives(algo):
    """Shared prefixes, a salt, decode growth and a memo that fills (and empties) mid-chain."""
    hash_fn = get_hash_fn(algo)
    root = hash_fn("seed")
    memo = HashMemo(max_entries=5)
    prefix = list(range(48))
    prompts = [(prefix + [100, 101] * 12, None), (prefix + [7] * 20, "salt"), (prefix, None)]
    for tokens, salt in prompts * 2:
        plain: list[bytes] = []
        BlockHasher(hash_fn, root, 16).extend(tokens, plain, salt)
        memoed: list[bytes] = []
        hasher = BlockHasher(hash_fn, root, 16, memo)
        hasher.extend(tokens[:20], memoed, salt)  # a prompt, then decode fills the rest
        hasher.extend(tokens, memoed, salt)
        assert memoed == plain
    assert 0 < len(memo.table(hash_fn)) <= 5


@pytest.mark.parametrize("seed", range(10))
def test_sequence_chain_remembers_whole_sequences_with_the_chains_hashes(seed):
    """Repeated, same-length and mutated-after sequences, salted first blocks and more sequences
    than it remembers: always the plain chain's hashes."""
    import random

    rng = random.Random(seed)
    hash_fn = get_hash_fn(rng.choice(["sha256", "sha256_cbor"]))
    memo = HashMemo(max_entries=rng.choice([4, 10_000]))
    pool = [[rng.randrange(50) for _ in range(rng.randrange(0, 70))] for _ in range(8)]
    pool.append(list(pool[0]))
    if pool[0]:
        pool[-1][0] += 1  # same length and last block as pool[0], another first token
    for _ in range(150):
        tokens = list(rng.choice(pool))
        block_size = rng.choice([4, 16])
        extra = ("salt",) if rng.random() < 0.2 else None
        parent = hash_fn(str(rng.randrange(2)))
        plain, chained = [], parent
        for i in range(0, len(tokens) - block_size + 1, block_size):
            chained = hash_fn(
                (chained, tuple(tokens[i : i + block_size]), extra if i == 0 else None)
            )
            plain.append(chained)
        assert memo.sequence_chain(hash_fn, parent, tokens, block_size, extra) == plain
        tokens.append(7)  # the caller's list changes later: what was remembered does not
    assert len(memo._sequences) <= HashMemo.RECENT_SEQUENCES
