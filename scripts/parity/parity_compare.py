"""Compare two peers' playbacks: metrics per step and KV event streams, with canonical block labels.

Labelling: every request's full token chain (prompt + its generated tokens, as that peer returned
them) is hashed here with the run's algorithm and seed (an implementation independent of the
emulator's). A block's label is `<first request>.b<index>` of its *symbolic* chain (generated
tokens are `Gen(request, k)`), so the same block gets the same label on both peers even when it
holds generated tokens that differ. A hash in an event that no chain explains is `?<hex>`: a
mismatch by construction. Events are then compared as (type, labels, parent label, symbolic token
ids, remaining fields). Blocks made only of prompt tokens additionally compare raw (bit-exact).
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field

import cbor2
from parity_sequence import Gen, Playback, gen_refs

_MASK64 = (1 << 64) - 1
SEMANTIC_FIELDS = ("type", "block_hashes", "parent_block_hash", "token_ids", "block_size", "medium")
IGNORED_FIELDS = ("ts",)


def hash_fn(algo: str):
    if algo == "sha256":
        return lambda obj: hashlib.sha256(
            pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        ).digest()
    if algo == "sha256_cbor":
        return lambda obj: hashlib.sha256(cbor2.dumps(obj, canonical=True)).digest()
    raise ValueError(f"unsupported hash algo {algo!r}")


def chain_hashes(algo: str, seed: str, token_ids: list[int], block_size: int) -> list[int]:
    """vLLM's chained block hashes of the full blocks, as KV events carry them (low 64 bits)."""
    h = hash_fn(algo)
    parent = h(seed)  # NONE_HASH = H(PYTHONHASHSEED as a string)
    out = []
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = h((parent, tuple(token_ids[start : start + block_size]), None))
        out.append(int.from_bytes(parent, "big") & _MASK64)
    return out


def token_label(token) -> int | str:
    return f"{token.request}#{token.index}" if isinstance(token, Gen) else token


@dataclass
class Labeller:
    """hash -> label, label -> symbolic tokens, for one peer."""

    by_hash: dict[int, str] = field(default_factory=dict)
    symbolic: dict[str, tuple] = field(default_factory=dict)
    concrete: dict[str, list[int]] = field(default_factory=dict)
    has_generated: dict[str, bool] = field(default_factory=dict)


def build_labeller(playback: Playback, algo: str, seed: str, block_size: int) -> Labeller:
    lab, label_of_key = Labeller(), {}
    for result in playback.results:
        concrete = result.prompt_ids + result.output_ids
        symbolic = tuple(result.step.prompt) + tuple(
            gen_refs(result.step.name, len(result.output_ids))
        )
        for i, h in enumerate(chain_hashes(algo, seed, concrete, block_size)):
            key = symbolic[: (i + 1) * block_size]
            label = label_of_key.setdefault(key, f"{result.step.name}.b{i}")
            lab.by_hash.setdefault(h, label)
            block = slice(i * block_size, (i + 1) * block_size)
            lab.symbolic[label] = tuple(token_label(t) for t in symbolic[block])
            lab.concrete[label] = concrete[block]
            lab.has_generated[label] = any(isinstance(t, Gen) for t in symbolic[block])
    return lab


def _label(lab: Labeller, h) -> str | None:
    if h is None:
        return None
    return lab.by_hash.get(h, f"?{h:x}" if isinstance(h, int) else f"?{h!r}")


def canonical_event(event: dict, lab: Labeller) -> dict:
    out = {k: v for k, v in event.items() if k not in IGNORED_FIELDS}
    labels = [_label(lab, h) for h in event.get("block_hashes", [])]
    out["block_hashes"] = labels
    if event.get("type") == "BlockStored":
        out["parent_block_hash"] = _label(lab, event.get("parent_block_hash"))
        expected = [t for label in labels for t in lab.concrete.get(label, [])]
        if list(event.get("token_ids", [])) == expected:
            out["token_ids"] = [t for label in labels for t in lab.symbolic[label]]
        else:
            out["token_ids"] = ["TOKENS-DO-NOT-MATCH-HASHES", *event.get("token_ids", [])]
    return out


def semantic(event: dict) -> dict:
    return {k: event.get(k) for k in SEMANTIC_FIELDS if k in event or k == "type"}


def event_text(event: dict | None) -> str:
    if event is None:
        return "-"
    kind, labels = event.get("type", "?"), event.get("block_hashes", [])
    names = ",".join(labels) if len(labels) <= 3 else f"{labels[0]}..{labels[-1]} ({len(labels)})"
    if kind == "BlockStored":
        return f"Stored [{names}] parent={event.get('parent_block_hash')} tok={len(event.get('token_ids', []))}"
    if kind == "BlockRemoved":
        return f"Removed [{names}]"
    return kind


def compare_events(real: list[dict], emu: list[dict]) -> dict:
    """Element-wise comparison of canonical streams: semantic fields and the rest separately."""
    n = max(len(real), len(emu))
    semantic_mismatch = [
        i
        for i in range(n)
        if i >= len(real) or i >= len(emu) or semantic(real[i]) != semantic(emu[i])
    ]
    other_mismatch = [
        i
        for i in range(min(len(real), len(emu)))
        if i not in semantic_mismatch and real[i] != emu[i]
    ]
    field_diffs = sorted(
        {
            f"{k}: real={real[i].get(k)!r} emulator={emu[i].get(k)!r}"
            for i in other_mismatch
            for k in set(real[i]) | set(emu[i])
            if real[i].get(k) != emu[i].get(k)
        }
    )
    return {
        "num_real": len(real),
        "num_emulator": len(emu),
        "semantic_equal": not semantic_mismatch,
        "first_semantic_mismatch": semantic_mismatch[0] if semantic_mismatch else None,
        "num_semantic_mismatches": len(semantic_mismatch),
        "all_fields_equal": not semantic_mismatch and not other_mismatch,
        "other_field_differences": field_diffs[:20],
    }


def raw_exact_check(
    real_raw: list[dict], emu_raw: list[dict], real_canon: list[dict], lab: Labeller
) -> dict:
    """Events whose blocks hold prompt tokens only must be identical on the wire (hashes included)."""
    checked = equal = 0
    for i, canon in enumerate(real_canon):
        labels = canon.get("block_hashes", [])
        if i >= len(emu_raw) or any(
            label is None or label.startswith("?") or lab.has_generated.get(label, True)
            for label in labels
        ):
            continue
        checked += 1
        keys = ("type", "block_hashes", "parent_block_hash", "token_ids")
        equal += all(real_raw[i].get(k) == emu_raw[i].get(k) for k in keys)
    return {"events_checked": checked, "events_bit_identical": equal}
