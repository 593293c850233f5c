"""`kv_connector_extra_config` of vLLM's OffloadingConnector (CPUOffloadingSpec), validated.

Keys (kv-semantics.md section 2): `block_size` (offload block, a multiple of the GPU block size;
default the GPU block size), `num_cpu_blocks` (0.11-0.13, in offload blocks) or `cpu_bytes_to_use`
(0.14+, bytes over all TP ranks: num_blocks = bytes // (offload_block_size x kv_bytes_per_token)),
`eviction_policy` lru | arc. Other keys are ignored, as vLLM ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvbench.emulator.engine.connector import ConnectorFacts
from kvbench.errors import UserError

_PREFIX = "--kv-transfer-config kv_connector_extra_config"
EVICTION_POLICIES = ("lru", "arc")


@dataclass(frozen=True, slots=True)
class OffloadConfig:
    offload_block_size: int  # tokens per offload block
    block_size_factor: int  # GPU blocks per offload block
    num_cpu_blocks: int  # capacity in offload blocks
    eviction_policy: str


def _positive_int(extra: dict, key: str) -> int:
    value = extra[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or int(value) != value
        or value <= 0
    ):
        raise UserError(f"{_PREFIX}.{key}: expected a positive integer, got {value!r}")
    return int(value)


def parse_offload_config(extra: dict, facts: ConnectorFacts) -> OffloadConfig:
    spec_name = extra.get("spec_name", "CPUOffloadingSpec")
    if spec_name != "CPUOffloadingSpec":
        raise UserError(
            f"{_PREFIX}.spec_name: only 'CPUOffloadingSpec' is emulated, got {spec_name!r}"
        )
    offload_bs = (
        _positive_int(extra, "block_size") if "block_size" in extra else facts.gpu_block_size
    )
    if offload_bs % facts.gpu_block_size:
        raise UserError(
            f"{_PREFIX}.block_size: {offload_bs} is not a multiple of the GPU block size {facts.gpu_block_size}"
        )
    policy = extra.get("eviction_policy", "lru")
    if policy not in EVICTION_POLICIES:
        raise UserError(
            f"{_PREFIX}.eviction_policy: expected one of {EVICTION_POLICIES}, got {policy!r}"
        )
    has_blocks, has_bytes = "num_cpu_blocks" in extra, "cpu_bytes_to_use" in extra
    if has_blocks == has_bytes:
        raise UserError(
            f"{_PREFIX}: give exactly one of num_cpu_blocks (vLLM 0.11) or cpu_bytes_to_use (0.14+)"
        )
    if has_blocks:
        num_blocks = _positive_int(extra, "num_cpu_blocks")
    else:
        offload_block_bytes = offload_bs * facts.kv_bytes_per_token  # over all ranks
        num_blocks = _positive_int(extra, "cpu_bytes_to_use") // offload_block_bytes
        if num_blocks == 0:
            raise UserError(
                f"{_PREFIX}.cpu_bytes_to_use: {extra['cpu_bytes_to_use']} bytes hold no "
                f"{offload_bs}-token block ({offload_block_bytes} bytes each)"
            )
    return OffloadConfig(offload_bs, offload_bs // facts.gpu_block_size, num_blocks, policy)
