"""A hardware profile entry (spec/catalog/hardware.yaml's format) from fitted cost-model factors:
what `kvbench calibrate` writes, and each candidate its replay fit runs the simulator with."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from kvbench.emulator.engine.cost_model import CostParams
from kvbench.spec.catalogs import HardwareProfile


def profile_entry(
    params: CostParams,
    host_link_bytes_per_s: float | None,
    vllm_version: str | None,
    base: HardwareProfile,
    name: str,
    source: str,
) -> dict:
    """One hardware.yaml entry: the base profile's rates, the measured host link (the base's when
    none was measured), and the factors that differ from the cost model's defaults."""
    host_link = host_link_bytes_per_s or base.host_link_bytes_per_s
    return {
        "name": name,
        "bf16_flops_per_s": base.bf16_flops_per_s,
        "hbm_gib": base.hbm_gib,
        "hbm_bytes_per_s": base.hbm_bytes_per_s,
        "host_link_bytes_per_s": float(f"{host_link:.3g}"),
        "tp_link_bytes_per_s": base.tp_link_bytes_per_s,
        "vllm_version": vllm_version,
        "source": source,
        "cost_model": changed_factors(params),
    }


def changed_factors(params: CostParams) -> dict:
    """The factors that differ from the cost model's defaults (the fit's findings)."""
    defaults = CostParams()
    changed = {}
    for item in dataclasses.fields(params):
        value = getattr(params, item.name)
        if item.name != "non_torch_bytes" and value != getattr(defaults, item.name):
            changed[item.name] = round(value, 9) if isinstance(value, float) else value
    return changed


def write_profile(entry: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(entry, sort_keys=False))
    return path
