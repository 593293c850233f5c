"""Scrape the few /metrics series the parity run compares (Prometheus text format).

Counters are summed over label sets (one engine per server); `_created` samples are skipped.
"""

from __future__ import annotations

import urllib.request

COMPARED = (
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
    "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_cached_total",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
)


def parse_metrics(text: str, names: tuple[str, ...] = COMPARED) -> dict[str, float]:
    wanted = set(names)
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        if name in wanted:
            values[name] = values.get(name, 0.0) + float(value)
    return values


def scrape(url: str, timeout_s: float = 10) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=timeout_s) as resp:
        return parse_metrics(resp.read().decode())
