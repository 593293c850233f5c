"""Model and hardware catalogs (data in `spec/catalog/models.yaml`, `hardware.yaml`, sources noted
there), loaded into small typed, immutable profiles.

`get_model(name)` / `get_hardware(name)` accept the catalog name or an alias; an unknown name is a
`UserError` that lists the known ones. Derived quantities (KV bytes per token, parameters in linear
layers, weight bytes) are properties, computed from the architecture, so the YAML holds only facts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from kvbench.errors import UserError

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "fp8": 1, "float32": 4}


@dataclass(frozen=True, slots=True)
class ModelProfile:
    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_context_tokens: int
    tie_word_embeddings: bool = False
    weight_bits: int = 16  # linear-layer weights; 4 for AWQ
    quant_group_size: int = 0  # AWQ group: one fp16 scale + one 4-bit zero per group
    kv_dtype: str = "bfloat16"
    aliases: tuple[str, ...] = ()

    @property
    def kv_dtype_bytes(self) -> int:
        return _DTYPE_BYTES[self.kv_dtype]

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer for one token, whole model (vLLM's page size / block size)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.kv_dtype_bytes

    @property
    def linear_params_per_layer(self) -> int:
        """q, k, v, o projections plus the gated MLP (gate, up, down)."""
        q_out = self.num_attention_heads * self.head_dim
        kv_out = self.num_kv_heads * self.head_dim
        attn = self.hidden_size * (q_out + 2 * kv_out) + q_out * self.hidden_size
        mlp = 3 * self.hidden_size * self.intermediate_size
        return attn + mlp

    @property
    def linear_params(self) -> int:
        return self.num_layers * self.linear_params_per_layer

    @property
    def embedding_params(self) -> int:
        """Input embedding plus an untied lm_head (kept at 16 bits, also in AWQ checkpoints)."""
        copies = 1 if self.tie_word_embeddings else 2
        return copies * self.vocab_size * self.hidden_size

    @property
    def streamed_weight_bytes(self) -> int:
        """Weights a forward step reads in full: all but an untied input embedding (of which only
        the looked-up rows are read); a tied table is read in full as the lm_head."""
        untied_embedding_bytes = (
            0 if self.tie_word_embeddings else 2 * self.vocab_size * self.hidden_size
        )
        return self.weight_bytes - untied_embedding_bytes

    @property
    def weight_bytes(self) -> int:
        linear_bits: float = self.weight_bits
        if self.quant_group_size:
            linear_bits += (16 + 4) / self.quant_group_size
        norms = (2 * self.num_layers + 1) * self.hidden_size + 2 * self.num_layers * self.head_dim
        return int(self.linear_params * linear_bits / 8) + 2 * (self.embedding_params + norms)


@dataclass(frozen=True, slots=True)
class HardwareProfile:
    """Achievable rates of one GPU (see hardware.yaml for what was measured and what derated)."""

    name: str
    bf16_flops_per_s: float
    hbm_gib: float
    hbm_bytes_per_s: float
    host_link_bytes_per_s: float  # pinned host<->device copy, each way
    tp_link_bytes_per_s: float  # GPU<->GPU, each way (NVLink, or PCIe where there is none)
    source: str = ""
    aliases: tuple[str, ...] = ()
    # Cost-model factors measured with this GPU (`kvbench calibrate`): CostParams field -> value,
    # as a tuple of pairs (the profile stays hashable); empty: the cost model's defaults.
    cost_model: tuple[tuple[str, float | bool], ...] = ()
    vllm_version: str | None = None  # the vLLM release the cost-model factors were measured with

    @property
    def cost_overrides(self) -> dict[str, float | bool]:
        return dict(self.cost_model)

    @property
    def hbm_bytes(self) -> int:
        return int(self.hbm_gib * 2**30)


def _load_yaml(filename: str) -> dict:
    text = resources.files("kvbench.spec").joinpath("catalog", filename).read_text()
    return yaml.safe_load(text)


def _build(cls: type, entry: dict[str, Any], filename: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(entry) - known
    if unknown:
        raise UserError(
            f"{filename}: entry {entry.get('name')!r} has unknown field(s) {sorted(unknown)}"
        )
    values = dict(entry)
    values["aliases"] = tuple(values.get("aliases", ()))
    if cls is HardwareProfile:
        values["cost_model"] = _cost_model_pairs(values.get("cost_model") or {}, filename, entry)
    for f in fields(cls):  # YAML reads "8.0e14" (no exponent sign) as a string
        if f.type == "float" and isinstance(values.get(f.name), str):
            try:
                values[f.name] = float(values[f.name])
            except ValueError:
                raise UserError(
                    f"{filename}: entry {entry.get('name')!r}: {f.name} is not a number"
                ) from None
    try:
        return cls(**values)
    except TypeError as err:
        raise UserError(f"{filename}: entry {entry.get('name')!r}: {err}") from None


def _cost_model_pairs(
    mapping: Any, filename: str, entry: dict[str, Any]
) -> tuple[tuple[str, float | bool], ...]:
    from kvbench.emulator.engine.cost_model import CostParams

    if not isinstance(mapping, dict):
        raise UserError(f"{filename}: entry {entry.get('name')!r}: cost_model must be a mapping")
    known = {f.name: f for f in fields(CostParams)}
    pairs: list[tuple[str, float | bool]] = []
    for key, value in sorted(mapping.items()):
        if key not in known:
            raise UserError(
                f"{filename}: entry {entry.get('name')!r}: cost_model.{key} is not a cost-model "
                f"factor; known: {', '.join(sorted(known))}"
            )
        if isinstance(value, bool):
            pairs.append((key, value))
            continue
        try:
            pairs.append((key, float(value)))
        except (TypeError, ValueError):
            raise UserError(
                f"{filename}: entry {entry.get('name')!r}: cost_model.{key} is not a number"
            ) from None
    return tuple(pairs)


def load_hardware_file(path: Path) -> HardwareProfile:
    """A hardware profile from its own YAML file (what `kvbench calibrate` writes): one catalog
    entry, either bare or as the only item of a `hardware:` list."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"hardware: cannot read profile {path}: {err}") from None
    if isinstance(data, dict) and isinstance(data.get("hardware"), list):
        if len(data["hardware"]) != 1:
            raise UserError(f"hardware: {path} must hold exactly one profile")
        data = data["hardware"][0]
    if not isinstance(data, dict):
        raise UserError(f"hardware: {path} is not a hardware profile mapping")
    return _build(HardwareProfile, data, str(path))


@cache
def _catalog(kind: str) -> dict[str, Any]:
    """name-or-alias -> profile. Cached: the catalogs are immutable package data."""
    cls, filename = (
        (ModelProfile, "models.yaml") if kind == "models" else (HardwareProfile, "hardware.yaml")
    )
    by_name: dict[str, Any] = {}
    for entry in _load_yaml(filename)[kind]:
        profile = _build(cls, entry, filename)
        short_name = profile.name.split("/")[-1]  # "Qwen3-8B" for "Qwen/Qwen3-8B"
        for key in (profile.name, short_name, *profile.aliases):
            by_name[key] = profile
    return by_name


def _lookup(kind: str, name: str, flag: str) -> Any:
    catalog = _catalog(kind)
    if name in catalog:
        return catalog[name]
    primary = sorted({p.name for p in catalog.values()})
    raise UserError(
        f"{flag}: unknown {kind[:-1] if kind == 'models' else kind} {name!r}; known: {', '.join(primary)}"
    )


def get_model(name: str) -> ModelProfile:
    return _lookup("models", name, "model")


def get_hardware(name: str) -> HardwareProfile:
    """A catalog name or alias, or the path of a profile file (a name ending in .yaml / .yml)."""
    if name.endswith((".yaml", ".yml")):
        return load_hardware_file(Path(name))
    return _lookup("hardware", name, "--hardware")


def model_names() -> list[str]:
    return sorted({p.name for p in _catalog("models").values()})
