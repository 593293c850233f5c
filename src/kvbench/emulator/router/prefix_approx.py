"""GIE's approximate `prefix-cache-scorer` (plugins/multi/prefix, v1.2): character blocks, no tokenizer.

Contract:
- The request's user input is the completion prompt's UTF-8 bytes, or `json.Marshal(messages)` for
  chat (compact JSON, Go's HTML escaping of < > &). A token-id prompt (which GIE cannot read) is
  hashed as its compact JSON text; kvbench's extension, documented.
- Blocks are `block_size_chars` long (default 64; autoTune: the engines' vLLM block_size x 4);
  only full blocks are hashed; input is truncated to `max_prefix_blocks` (256) blocks.
- Chain: seed = xxh64(model ‖ cache_salt); h_i = xxh64(chunk_i ‖ h_{i-1} as little-endian uint64).
- Index: an LRU of hashes per endpoint of `lru_capacity_per_server` entries (31250; autoTune: the
  endpoint's num_gpu_blocks). PreRequest inserts every hash of the request for the chosen endpoint
  (optimistic, no feedback from the engine).
- Score: length of the consecutive run of hashes, from the first, that the endpoint holds, divided
  by the number of hashes (0 when the prompt has no full block).
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from typing import Any

import xxhash

from kvbench.emulator.router.endpoints import Endpoint
from kvbench.emulator.router.request import RouterRequest
from kvbench.emulator.router.scorers import ScorerOutput

AVERAGE_CHARS_PER_TOKEN = 4
DEFAULT_BLOCK_SIZE_CHARS = 64
DEFAULT_MAX_PREFIX_BLOCKS = 256
DEFAULT_LRU_CAPACITY_PER_SERVER = 31250


def go_json(value: Any) -> bytes:
    """encoding/json.Marshal's bytes for plain JSON values (compact, HTML-escaped)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode("utf-8")


def user_input_bytes(request: RouterRequest, max_chars: int | None = None) -> bytes:
    """The bytes the scorer hashes; with `max_chars`, at least their first `max_chars` (all the
    scorer reads). A token id serialises to >= 2 characters with its comma, so the JSON of the
    first max_chars // 2 + 1 ids is longer than max_chars and agrees with the full JSON there."""
    if request.is_chat:
        return go_json(request.messages)
    if request.prompt_text is not None:
        return request.prompt_text.encode("utf-8")
    token_ids = request.prompt_token_ids
    if max_chars is not None and token_ids is not None:
        token_ids = token_ids[: max_chars // 2 + 1]
    return go_json(token_ids)


def hash_prompt(
    user_input: bytes,
    model: str,
    cache_salt: str,
    block_size_chars: int,
    max_prefix_blocks: int = DEFAULT_MAX_PREFIX_BLOCKS,
) -> list[int]:
    if block_size_chars <= 0 or len(user_input) < block_size_chars:
        return []
    user_input = user_input[: block_size_chars * max_prefix_blocks]
    previous = xxhash.xxh64_intdigest((model + cache_salt).encode("utf-8"))
    hashes = []
    for start in range(0, len(user_input) - block_size_chars + 1, block_size_chars):
        previous = xxhash.xxh64_intdigest(
            user_input[start : start + block_size_chars] + struct.pack("<Q", previous)
        )
        hashes.append(previous)
    return hashes


class ServerLRU:
    """One endpoint's hashes, least recently used first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.hashes: OrderedDict[int, None] = OrderedDict()

    def add(self, block_hashes: list[int]) -> None:
        for block_hash in block_hashes:
            self.hashes[block_hash] = None
            self.hashes.move_to_end(block_hash)
        while len(self.hashes) > self.capacity:
            self.hashes.popitem(last=False)

    def matched_prefix_blocks(self, block_hashes: list[int]) -> int:
        matched = 0
        for block_hash in block_hashes:
            if block_hash not in self.hashes:
                break
            matched += 1
        return matched


class ApproxPrefixCacheScorer:
    type = "prefix-cache-scorer"

    def __init__(
        self,
        name: str,
        auto_tune: bool = True,
        block_size_chars: int = DEFAULT_BLOCK_SIZE_CHARS,
        max_prefix_blocks: int = DEFAULT_MAX_PREFIX_BLOCKS,
        lru_capacity_per_server: int = DEFAULT_LRU_CAPACITY_PER_SERVER,
    ) -> None:
        self.name = name
        self.auto_tune = auto_tune
        self.block_size_chars = block_size_chars
        self.max_prefix_blocks = max_prefix_blocks
        self.lru_capacity_per_server = lru_capacity_per_server
        self.servers: dict[str, ServerLRU] = {}
        self._pending: dict[str, list[int]] = {}  # request_id -> hashes, from score to pre_request
        self.last_match: tuple[int, int] = (0, 0)  # (matched blocks of chosen, total) for metrics

    def index_size(self) -> int:
        return sum(len(server.hashes) for server in self.servers.values())

    def effective_block_size_chars(self, endpoints: list[Endpoint]) -> int:
        if self.auto_tune and endpoints and endpoints[0].metrics.block_size_tokens:
            return endpoints[0].metrics.block_size_tokens * AVERAGE_CHARS_PER_TOKEN
        return self.block_size_chars

    def _server(self, endpoint: Endpoint) -> ServerLRU:
        server = self.servers.get(endpoint.address)
        if server is None:
            capacity = self.lru_capacity_per_server
            if self.auto_tune and endpoint.metrics.num_gpu_blocks:
                capacity = endpoint.metrics.num_gpu_blocks
            server = self.servers[endpoint.address] = ServerLRU(capacity)
        return server

    async def score(self, request: RouterRequest, endpoints: list[Endpoint]) -> ScorerOutput:
        block_size_chars = self.effective_block_size_chars(endpoints)
        hashes = hash_prompt(
            user_input_bytes(request, block_size_chars * self.max_prefix_blocks),
            request.model,
            request.cache_salt,
            block_size_chars,
            self.max_prefix_blocks,
        )
        self._pending[request.request_id] = hashes
        total = len(hashes)
        matched = {e.address: self._server(e).matched_prefix_blocks(hashes) for e in endpoints}
        scores = {a: (m / total if total else 0.0) for a, m in matched.items()}
        tokens_per_block = block_size_chars / AVERAGE_CHARS_PER_TOKEN
        hit_tokens = {a: int(m * tokens_per_block) for a, m in matched.items()}
        return ScorerOutput(scores, hit_tokens, {"matched_blocks": matched, "total_blocks": total})

    def pre_request(self, request: RouterRequest, chosen: Endpoint) -> None:
        hashes = self._pending.pop(request.request_id, [])
        server = self._server(chosen)
        self.last_match = (server.matched_prefix_blocks(hashes), len(hashes))
        server.add(hashes)

    def response_complete(self, request: RouterRequest, chosen: Endpoint) -> None:
        self._pending.pop(request.request_id, None)
