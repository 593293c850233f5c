"""Validity checks from a cell's degradation counts (cell.json `validity.degradation`).

Contract: for each kind of degradation the cell measured (its count is not None) one `Check` with
the cell as subject: FLAG when it happened (count > 0), OK when it was measured and did not. A kind
no source measured gives no check (a real vLLM has no kvbench counters; saying "ok" would claim
what was not checked). Every name here is in check_names.BOUND_CHECKS, so a FLAG is repeated as
a caveat on the findings of the model the cell belongs to. A cell whose cold-start reset failed
(`failed_resets` > 0) is therefore never a clean "ok": its cache may have started warm.
"""

from __future__ import annotations

from kvbench.analysis import check_names as names
from kvbench.analysis.load import CellData
from kvbench.analysis.validity import Check, CheckStatus
from kvbench.results.cell import DegradationCounts

# kind -> (check name, what a FLAG means for the numbers)
_KINDS: dict[str, tuple[str, str]] = {
    "failed_resets": (
        names.CACHE_RESET,
        "component(s) holding KV were not reset before the cell: it may have started warm",
    ),
    "store_errors": (
        names.KV_STORE_AVAILABLE,
        "remote KV-store operations failed: remote hits became misses, writes were dropped",
    ),
    "store_skipped": (
        names.KV_STORE_AVAILABLE,
        "remote KV-store operations skipped while the store was down",
    ),
    "store_writes_refused": (
        names.KV_STORE_AVAILABLE,
        "the KV store refused writes (out of memory): those chunks were never stored remotely",
    ),
    "store_connections_rejected": (
        names.KV_STORE_AVAILABLE,
        "the KV store refused connections: those operations never reached it",
    ),
    "index_lookup_failures": (
        names.ROUTER_INDEX_AVAILABLE,
        "router KV-block index lookups failed: those requests were routed without a prediction",
    ),
    "kv_events_lost": (
        names.KV_EVENTS_COMPLETE,
        "KV-event messages were lost beyond replay: the router's index misses those blocks",
    ),
    "kv_events_apply_failures": (
        names.KV_EVENTS_COMPLETE,
        "KV-event messages could not be applied to the index store",
    ),
    "engine_ejections": (
        names.ENGINES_STAYED_IN_ROUTING,
        "engine(s) were taken out of routing (down, failing, or unresponsive)",
    ),
}


def check_degradation(cell: CellData) -> list[Check]:
    counts = cell.info.validity.degradation
    if counts is None:
        return []
    found: dict[str, list[str]] = {}
    measured: set[str] = set()
    for kind, (name, meaning) in _KINDS.items():
        value = getattr(counts, kind)
        if value is None:
            continue
        measured.add(name)
        if value > 0:
            found.setdefault(name, []).append(f"{value} {kind.replace('_', ' ')}: {meaning}")
    checks = [
        Check(name, CheckStatus.FLAG, cell.cell_id, "; ".join(found[name]))
        if name in found
        else Check(name, CheckStatus.OK, cell.cell_id, _clean(counts, name))
        for name in _ordered(measured)
    ]
    return checks


def _ordered(measured: set[str]) -> list[str]:
    order = list(dict.fromkeys(name for name, _ in _KINDS.values()))
    return [name for name in order if name in measured]


def _clean(counts: DegradationCounts, name: str) -> str:
    """The OK evidence: the kinds of this check that were measured (a None kind is not claimed)."""
    kinds = [
        kind.replace("_", " ")
        for kind, (n, _) in _KINDS.items()
        if n == name and getattr(counts, kind) is not None
    ]
    text = "0 " + ", 0 ".join(kinds) + " during the cell"
    if counts.unscraped_sources:
        text += f" (not counted: {', '.join(counts.unscraped_sources)} could not be scraped)"
    return text
