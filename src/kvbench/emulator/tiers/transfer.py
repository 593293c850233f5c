"""Host-link model: one direction of the PCIe link between a GPU and pinned host memory.

Contract: transfers on one link run one after another ("busy until"), each taking
bytes / bytes_per_s. Under tensor parallelism every rank moves its own 1/tp share over its own link
at the same time, so callers pass the bytes of ONE rank. GPU->CPU and CPU->GPU are separate links
(separate CUDA streams; PCIe is full duplex), so a store never delays a load.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TransferSlot:
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(slots=True)
class HostLink:
    bytes_per_s: float
    busy_until_s: float = 0.0

    def __post_init__(self) -> None:
        if self.bytes_per_s <= 0:
            raise ValueError(f"host link bandwidth must be positive, got {self.bytes_per_s}")

    def duration_s(self, num_bytes: int) -> float:
        return num_bytes / self.bytes_per_s

    def schedule(self, now_s: float, num_bytes: int) -> TransferSlot:
        """Queue a transfer behind whatever is in flight; returns when it runs."""
        start_s = max(now_s, self.busy_until_s)
        end_s = start_s + self.duration_s(num_bytes)
        self.busy_until_s = end_s
        return TransferSlot(start_s, end_s)

    def reset(self) -> None:
        self.busy_until_s = 0.0


def kv_bytes_per_rank(num_tokens: int, kv_bytes_per_token: int, tensor_parallel_size: int) -> int:
    """KV bytes one TP rank holds for `num_tokens` tokens (each rank has 1/tp of the KV heads)."""
    return num_tokens * kv_bytes_per_token // tensor_parallel_size
