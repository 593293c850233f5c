"""The cache-state protocol of a cell: reset -> prime -> verify.

- reset (spec.cache.reset, default on): `target.reset_caches(deployment)`; a cell whose reset did
  not happen everywhere may inherit a warm cache, and the protocol says so.
- prime (spec.cache.prime): every distinct prefix of the workload is sent once with max_tokens=1
  (records with phase "prime", excluded from statistics), so the cell starts with the prefixes
  cached (in GPU or, after eviction, in the offload tier).
- verify (spec.cache.verify): passive, it sends nothing that could warm the cache. Before the load
  the prefix-cache counters are scraped; afterwards (a) the first request of each prefix group in
  the cell is checked against the expected state via its server-reported cached_tokens (cold: the
  first use of a prefix must miss, < 1 block; warm: it must hit most of the prefix) and (b) the
  counter deltas give the cell's prefix-cache hit rate (GPU: vllm:prefix_cache_*; external tier:
  vllm:external_prefix_cache_*). The result goes to cell.json `cache_protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvbench.collect.prometheus import Sample, counter_sum
from kvbench.results.deployment import ResetResult
from kvbench.workload.types import Conversation, Turn, Workload

COUNTERS = {
    "gpu_hits_tokens": "vllm:prefix_cache_hits_total",
    "gpu_queries_tokens": "vllm:prefix_cache_queries_total",
    "external_hits_tokens": "vllm:external_prefix_cache_hits_total",
    "external_queries_tokens": "vllm:external_prefix_cache_queries_total",
}
MISS_BELOW_TOKENS = (
    16  # a first use "missed" when fewer tokens than one (16-token) block were cached
)
WARM_FRACTION = 0.5  # a primed first use "hit" when at least half of its prefix was cached


def expected_state(reset_result: ResetResult | None, primed: bool) -> str:
    """warm after priming; cold when every component holding KV reset (a router's prefix index
    that could not be reset does not make the engines' caches warm, see ROUTING_ONLY_COMPONENTS);
    else unknown: no reset, or one that did not happen, and the cell may inherit a warm cache."""
    if primed:
        return "warm"
    if reset_result is not None and reset_result.kv_holders_reset():
        return "cold"
    return "unknown"


def prime_conversations(workload: Workload) -> list[Conversation]:
    """One single-token request per distinct prefix (by prefix group), prefix only."""
    seen: set = set()
    primes = []
    for conv in workload.conversations:
        key = conv.prefix_group
        if key is None or key in seen or not (conv.prefix_token_ids or conv.prefix_text):
            continue
        seen.add(key)
        primes.append(
            Conversation(
                f"prime-{key}",
                conv.prefix_token_ids,
                [Turn((), 1)],
                prefix_group=key,
                prefix_text=conv.prefix_text,
            )
        )
    return primes


def counter_snapshot(scrape: dict[str, list[Sample] | str]) -> dict[str, Any]:
    """Sums over every source that answered; sources that failed are listed."""
    totals: dict[str, float | None] = {}
    answered = {name: s for name, s in scrape.items() if not isinstance(s, str)}
    for key, metric in COUNTERS.items():
        values = [counter_sum(samples, metric) for samples in answered.values()]
        known = [v for v in values if v is not None]
        totals[key] = sum(known) if known else None
    failed = {name: s for name, s in scrape.items() if isinstance(s, str)}
    return {"counters": totals, "failed_sources": failed}


def counter_deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    deltas: dict[str, Any] = {}
    for key in COUNTERS:
        a, b = before["counters"].get(key), after["counters"].get(key)
        deltas[key] = None if a is None or b is None else b - a
    deltas["gpu_hit_rate"] = _ratio(deltas["gpu_hits_tokens"], deltas["gpu_queries_tokens"])
    deltas["external_hit_rate"] = _ratio(
        deltas["external_hits_tokens"], deltas["external_queries_tokens"]
    )
    return deltas


@dataclass
class FirstUseTally:
    """The first non-prime request of each prefix group in the cell (by sent time)."""

    first: dict[int, tuple[float, int | None, int]] = field(
        default_factory=dict
    )  # group -> (sent_s, cached, prefix_len)

    def observe(
        self,
        phase: str,
        prefix_group: int | None,
        sent_s: float,
        cached_tokens: int | None,
        prefix_tokens: int,
    ) -> None:
        if phase == "prime" or prefix_group is None or prefix_tokens <= 0:
            return
        known = self.first.get(prefix_group)
        if known is None or sent_s < known[0]:
            self.first[prefix_group] = (sent_s, cached_tokens, prefix_tokens)

    def verdict(self, expected: str) -> dict[str, Any]:
        reported = [(cached, plen) for _, cached, plen in self.first.values() if cached is not None]
        result: dict[str, Any] = {
            "expected": expected,
            "first_use_requests": len(self.first),
            "first_use_with_cached_tokens": len(reported),
        }
        if not reported:
            result["consistent"] = None
            result["note"] = (
                "the server reported no cached_tokens (vLLM: --enable-prompt-tokens-details)"
            )
            return result
        misses = sum(1 for cached, _ in reported if cached < MISS_BELOW_TOKENS)
        warm = sum(1 for cached, plen in reported if cached >= WARM_FRACTION * plen)
        result.update(
            first_use_misses=misses,
            first_use_warm=warm,
            first_use_cached_fraction_mean=sum(c / p for c, p in reported) / len(reported),
        )
        if expected == "cold":
            result["consistent"] = misses == len(reported)
        elif expected == "warm":
            result["consistent"] = warm == len(reported)
        else:
            result["consistent"] = None
            result["inherited_warm_prefixes"] = len(reported) - misses
        return result


def _ratio(num, den):
    return None if num is None or not den else num / den
