"""Latency figures: TTFT against reuse distance, and the TTFT delta heatmap at the common load level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kvbench.analysis.latency import LatencyComparison, select
from kvbench.analysis.peaks import Peak
from kvbench.report.figures import Skipped, _peak_requests, _save, _ttft_lines, plt
from kvbench.report.figures_delta import draw_delta_grid

N_DISTANCE_BINS = 6
MIN_PER_POINT = 3
HEATMAP_STATS = (("ttft_p50", "TTFT p50"), ("ttft_mean", "TTFT mean"))


def ttft_by_reuse_distance(peaks: list[Peak], scenarios: list[str], out: Path) -> Path | Skipped:
    """TTFT p50 per reuse-distance bin (seconds since the reused prefix or conversation was last sent).

    Bins: log-spaced between the smallest and largest distance of all peak cells pooled; x = the bin's
    geometric centre (the same for every scenario); a point needs MIN_PER_POINT requests. First uses
    (no distance) are left out."""
    name = "ttft_by_reuse_distance.png"
    data = _peak_requests(peaks)
    if data.empty:
        return Skipped(name, "no successful requests at the peaks")
    distance = pd.to_numeric(data["reuse_distance_s"], errors="coerce")
    data = data.assign(distance_s=distance)[distance.notna() & (distance > 0)]
    if data["distance_s"].nunique() < 2:
        return Skipped(name, "requests carry no reuse distances (or only one)")
    edges = np.geomspace(data["distance_s"].min(), data["distance_s"].max(), N_DISTANCE_BINS + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    bins = pd.cut(data["distance_s"], edges, include_lowest=True, labels=False)
    data = data.assign(bin_centre=centres[bins.to_numpy(dtype=int)])
    return _ttft_lines(
        data,
        "bin_centre",
        f"reuse distance s (log bins, >= {MIN_PER_POINT} requests a point)",
        scenarios,
        out / name,
        "TTFT p50 by reuse distance (peak cells)",
        min_per_point=MIN_PER_POINT,
        log_x=True,
    )


def ttft_delta_heatmap(comparisons: list[LatencyComparison], out: Path) -> Path | Skipped:
    """Rows: model x TTFT statistic; columns: scenarios; value: delta % vs baseline at the common level."""
    name = "ttft_delta_heatmap.png"
    common = [c for c in select(comparisons, basis="common") if c.delta.method != "none"]
    if not common:
        return Skipped(name, "no latency delta against the baseline at a common level")
    scenarios = list(dict.fromkeys(c.scenario for c in common))
    rows = [
        (model, stat, label)
        for model in dict.fromkeys(c.model for c in common)
        for stat, label in HEATMAP_STATS
    ]
    cells = {}
    for i, (model, stat, _) in enumerate(rows):
        for c in select(common, model=model, stat=stat):
            cells[(i, scenarios.index(c.scenario))] = c
    fig, ax = plt.subplots(figsize=(1.6 * len(scenarios) + 3.5, 0.7 * len(rows) + 2))
    deltas = {key: c.delta for key, c in cells.items()}
    draw_delta_grid(ax, fig, deltas, (len(rows), len(scenarios)), "RdYlGn_r")  # green = lower
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=30, ha="right")
    ax.set_yticks(
        range(len(rows)),
        [
            f"{m.split('/')[-1]} {label}\n(level {select(common, model=m)[0].level:g})"
            for m, _, label in rows
        ],
        fontsize=8,
    )
    ax.set_title(
        "TTFT delta vs baseline at the common load level (lower is better)",
        fontsize=9,
    )
    return _save(fig, out / name)
