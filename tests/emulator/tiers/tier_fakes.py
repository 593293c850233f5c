"""Small request objects that satisfy ConnectorRequest, for driving connectors directly."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvbench.emulator.engine.connector import ConnectorFacts, ScheduledChunk


@dataclass
class FakeRequest:
    request_id: str
    all_token_ids: list[int]
    num_prompt_tokens: int
    block_hashes: list[bytes] = field(default_factory=list)
    num_computed_tokens: int = 0


def hashed_request(request_id: str, block_labels: list[str], block_size: int = 16) -> FakeRequest:
    """A prompt of len(block_labels) full GPU blocks whose block hashes are b'<label>'."""
    tokens = list(range(len(block_labels) * block_size))
    return FakeRequest(request_id, tokens, len(tokens), [label.encode() for label in block_labels])


def chunk(request: FakeRequest, computed: int, scheduled: int) -> ScheduledChunk:
    return ScheduledChunk(request, computed, scheduled)


def facts(**overrides) -> ConnectorFacts:
    values = dict(
        model_name="Qwen/Qwen3-8B",
        gpu_block_size=16,
        kv_bytes_per_token=1000,
        tensor_parallel_size=2,
        host_link_bytes_per_s=1e6,
    )
    values.update(overrides)
    return ConnectorFacts(**values)
