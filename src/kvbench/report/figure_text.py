"""Each figure beside the text it supports: its caption says what to look for in it.

`figure_block(data, name)` renders one figure (image + caption) where a section calls it, or one
line saying why it was not drawn; a figure that was never attempted renders nothing.
"""

from __future__ import annotations

from pathlib import Path

from kvbench.report.data import ReportData
from kvbench.report.figures import Skipped

CAPTIONS = {
    "peak_throughput_all_scenarios.png": (
        "Peak output throughput per scenario. Whiskers: 95 % interval over repeats (none with one "
        "repeat). A bar whose whisker clears the baseline's bar is a gain; overlapping whiskers "
        "are not a difference."
    ),
    "throughput_curve": (
        "Output throughput at each load level, 95 % interval over repeats as whiskers. Where a "
        "curve flattens the stack is saturated; its highest point is the peak in the table."
    ),
    "throughput_bars": (
        "Output throughput at the single load level of this run, per scenario; whiskers: 95 % "
        "interval over repeats (absent with one repeat). Run more levels to see a curve."
    ),
    "performance_delta_heatmap_all.png": (
        "Peak-throughput change vs the baseline. The colour scale is symmetric around 0; a "
        "change that is not significant (n.s.) or only indicative is drawn pale and marked, so "
        "only firm changes show strong colour."
    ),
    "latency_comparison_all.png": (
        "TTFT and TPOT at each scenario's peak (bar: p50, tick: p99). Offload and cache-aware "
        "routing act on TTFT (a prefix hit skips prefill); TPOT should stay flat."
    ),
    "ttft_delta_heatmap.png": (
        "TTFT change vs the baseline at the common load level, mean and p50. Symmetric scale; "
        "n.s. and indicative changes are pale and marked."
    ),
    "ttft_by_turn.png": (
        "TTFT p50 per conversation turn (peak cells). Later turns extend the earlier turns' "
        "context; a scenario that keeps it cached shows a lower TTFT on those turns."
    ),
    "ttft_by_reused_prefix.png": (
        "TTFT p50 by the length of the prefix the request reuses (peak cells). A hit saves "
        "prefill in proportion to that length, so a widening gap means hits."
    ),
    "ttft_by_reuse_distance.png": (
        "TTFT p50 by seconds since the reused prefix was last sent. Where the baseline's TTFT "
        "rises with distance its GPU cache evicted the prefix; an offload tier flattens the rise."
    ),
    "pcp_kv_cache_usage.png": (
        "GPU KV-cache usage during the peak cells. Near 100 % the GPU cache is under pressure "
        "and offload can matter; far below it nothing was evicted."
    ),
    "pcp_request_queues.png": (
        "Running and waiting requests during the peak cells. Waiting above 0 means the engines "
        "were saturated at that level."
    ),
    "pcp_prefix_cache_hits.png": (
        "Prefix-cache hit rate from the engines' counters (hit tokens / queried tokens) and the "
        "shares of hit tokens served by the CPU and remote tiers."
    ),
    "pcp_memory_usage.png": (
        "Server process memory (RSS) during the peak cells: a CPU tier's pinned memory shows here."
    ),
    "pcp_correlation_heatmap.png": (
        "Correlation (Pearson) across all ok cells between server metrics and client "
        "performance. With few cells, a hint at most."
    ),
}


def caption_for(name: str) -> str:
    if name.startswith("throughput_curve_"):
        return CAPTIONS["throughput_curve"]
    if name.startswith("throughput_bars_"):
        return CAPTIONS["throughput_bars"]
    return CAPTIONS.get(name, name)


def _block(item: Path | Skipped) -> list[str]:
    if isinstance(item, Skipped):
        return [f"*Figure `{item.name}` not drawn: {item.reason}.*", ""]
    caption = caption_for(item.name)
    title = item.stem.replace("_", " ")
    return [f"![{title}]({item.name})", "", f"*{caption}*", ""]


def figure_block(data: ReportData, name: str) -> list[str]:
    item = data.figure(name)
    return [] if item is None else _block(item)


def figure_blocks(data: ReportData, prefix: str) -> list[str]:
    lines: list[str] = []
    for item in data.figures_named(prefix):
        lines += _block(item)
    return lines
