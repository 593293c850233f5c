"""llm-d's `precise-prefix-cache-scorer` (inference-scheduler v0.4 + kv-cache-manager v0.4).

Contract:
- Request keys are the engine's own block hashes, recomputed from the prompt tokens the way vLLM
  computes `sha256_cbor` (kv-cache-manager v0.4 token_processor.go): init = sha256(CBOR(hashSeed)),
  h_i = sha256(CBOR([h_{i-1}, tokens_i, None])), key = the low 64 bits of h_i (big-endian bytes
  24..32). Only full blocks of `tokenProcessorConfig.blockSize` tokens (default 16) are keyed. They
  match the engine's KV events only if it runs `--prefix-caching-hash-algo sha256_cbor` with
  PYTHONHASHSEED == hashSeed and the same block size.
- Token-id prompts are used as they are. Text prompts and chat (ChatML-rendered) go through the
  emulated engine's deterministic tokenizer (`kvbench.emulator.api.tokenizer`) when it is
  importable; otherwise they score 0 (no holder is predicted).
- Score (kvblock_scorer.go LongestPrefix): walking the keys in order, the pods that held every key
  so far each gain their max tier weight for the key (gpu 1.0, cpu 0.8); then min-max normalised
  over the pods that scored (utils.go): pods without a score -> 0, all scored equal -> 1.0.
- The index store being down scores every endpoint 0; routing continues on the other scorers.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import cbor2

from kvbench.emulator.engine.hashing import HashMemo
from kvbench.emulator.engine.hashing import sha256_cbor as engine_sha256_cbor
from kvbench.emulator.router.endpoints import Endpoint
from kvbench.emulator.router.index_memory import Holders, IndexUnavailable, KVBlockIndex
from kvbench.emulator.router.request import RouterRequest
from kvbench.emulator.router.scorers import ScorerOutput

log = logging.getLogger(__name__)

TIER_WEIGHTS = {"gpu": 1.0, "cpu": 0.8}
DEFAULT_TIER_WEIGHT = 0.8  # unknown offload tiers (disk, remote) weigh as an offload tier


def sha256_cbor(value) -> bytes:
    return hashlib.sha256(cbor2.dumps(value, canonical=True)).digest()


def block_keys(
    token_ids: list[int],
    block_size_tokens: int,
    hash_seed: str,
    memo: HashMemo | None = None,
) -> list[int]:
    """With a `memo`, chain hashes are looked up in its sha256_cbor table, keyed as the engine keys
    them (`(parent, block tokens tuple, None)`, the same CBOR array, so the same hash): shared
    prefixes are hashed once per process, by whichever of engine and router met them first."""
    parent = sha256_cbor(hash_seed)
    keys = []
    last_start = len(token_ids) - block_size_tokens + 1
    if memo is None:
        for start in range(0, last_start, block_size_tokens):
            parent = sha256_cbor([parent, token_ids[start : start + block_size_tokens], None])
            keys.append(int.from_bytes(parent[24:], "big"))
        return keys
    hashes = memo.sequence_chain(engine_sha256_cbor, parent, token_ids, block_size_tokens)
    return [int.from_bytes(block_hash[24:], "big") for block_hash in hashes]


def longest_prefix_scores(
    holders_per_key: list[Holders], candidates: set[str]
) -> tuple[dict[str, float], dict[str, int]]:
    """-> (weighted score, matched consecutive blocks) for pods that hold the first key.

    A run of consecutive keys with the very same holders object (an index may share one mapping
    between keys with equal holders) is walked once: the same pods stay active for all of it, so
    each gains its weight once per key of the run, added one by one (the same float sums as a
    key-by-key walk; pods enter the score dict only at the first key, so its order is kept)."""
    scores: dict[str, float] = {}
    matched: dict[str, int] = {}
    active = set(candidates)
    num_keys = len(holders_per_key)
    index = 0
    while index < num_keys:
        holders = holders_per_key[index]
        end = index + 1
        while end < num_keys and holders_per_key[end] is holders:
            end += 1
        run = end - index
        index = end
        active &= holders.keys()
        if not active:
            break
        for pod in active:
            tiers = holders[pod]
            if len(tiers) == 1:  # the common case, without max's generator
                (tier,) = tiers
                weight = TIER_WEIGHTS.get(tier, DEFAULT_TIER_WEIGHT)
            else:
                weight = max(TIER_WEIGHTS.get(tier, DEFAULT_TIER_WEIGHT) for tier in tiers)
            score = scores.get(pod, 0.0)
            for _ in range(run):
                score += weight
            scores[pod] = score
            matched[pod] = matched.get(pod, 0) + run
    return scores, matched


def normalize(raw: dict[str, float], addresses: list[str]) -> dict[str, float]:
    if not raw:
        return {address: 0.0 for address in addresses}
    low, high = min(raw.values()), max(raw.values())
    out = {}
    for address in addresses:
        if address not in raw:
            out[address] = 0.0
        else:
            out[address] = 1.0 if high == low else (raw[address] - low) / (high - low)
    return out


@dataclass(frozen=True)
class TextTokenizer:
    """Prompt text / chat messages -> token ids, exactly as the emulated engine tokenizes them."""

    encode: Callable[[str], list[int]]
    render_chat: Callable[[list[dict]], str] | None = None

    def chat_tokens(self, messages: list) -> list[int] | None:
        if self.render_chat is None:
            return None
        rendered = []
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return None
            content = message.get("content", "")
            if isinstance(content, list):  # OpenAI content parts: the engine keeps the text parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if not isinstance(content, str):
                return None
            rendered.append({"role": message["role"], "content": content})
        return self.encode(self.render_chat(rendered))


def load_text_tokenizer() -> TextTokenizer | None:
    """The emulated engine's built-in deterministic tokenizer (kvbench.emulator.api.tokenizer), if
    present. A real vLLM with a Hugging Face tokenizer tokenizes differently: text prompts then
    predict nothing useful, token-id prompts are exact."""
    try:
        module = importlib.import_module("kvbench.emulator.api.tokenizer")
    except ImportError:
        return None
    builtin = getattr(module, "BuiltinTokenizer", None)
    if builtin is None:
        return None
    return TextTokenizer(
        encode=builtin().encode, render_chat=getattr(module, "chatml_prompt", None)
    )


class PrecisePrefixCacheScorer:
    type = "precise-prefix-cache-scorer"

    def __init__(
        self,
        name: str,
        index: KVBlockIndex,
        block_size_tokens: int = 16,
        hash_seed: str = "",
        text_tokenizer: TextTokenizer | None = None,
    ) -> None:
        self.name = name
        self.index = index
        self.block_size_tokens = block_size_tokens
        self.hash_seed = hash_seed
        self.text_tokenizer = text_tokenizer
        self.lookup_failures = 0
        self.hash_memo: HashMemo | None = None  # the simulated target shares its engines' memo
        self.on_request_model: Callable[[str], None] = lambda model: None  # wired to the subscriber

    def request_tokens(self, request: RouterRequest) -> list[int] | None:
        if request.prompt_token_ids is not None:
            return request.prompt_token_ids
        if self.text_tokenizer is None:
            return None
        if request.prompt_text is not None:
            return self.text_tokenizer.encode(request.prompt_text)
        return self.text_tokenizer.chat_tokens(request.messages or [])

    async def score(self, request: RouterRequest, endpoints: list[Endpoint]) -> ScorerOutput:
        addresses = [e.address for e in endpoints]
        self.on_request_model(request.model)
        tokens = self.request_tokens(request)
        if not tokens:
            return ScorerOutput({a: 0.0 for a in addresses}, {a: 0 for a in addresses})
        keys = block_keys(tokens, self.block_size_tokens, self.hash_seed, self.hash_memo)
        try:
            holders = await self.index.lookup(request.model, keys)
        except IndexUnavailable as err:
            self.lookup_failures += 1
            log.debug("precise scorer: %s", err)
            return ScorerOutput(
                {a: 0.0 for a in addresses}, {a: 0 for a in addresses}, {"index_error": str(err)}
            )
        raw, matched = longest_prefix_scores(holders, set(addresses))
        hit_tokens = {a: matched.get(a, 0) * self.block_size_tokens for a in addresses}
        return ScorerOutput(normalize(raw, addresses), hit_tokens, {"raw": raw, "keys": len(keys)})

    def pre_request(self, request: RouterRequest, chosen: Endpoint) -> None:
        pass

    def response_complete(self, request: RouterRequest, chosen: Endpoint) -> None:
        pass
