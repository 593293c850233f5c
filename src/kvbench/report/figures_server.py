"""Server-metric figures (the seed's pcp_* figures), drawn from server_metrics.parquet of the peak cells."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kvbench.analysis.peaks import Peak  # noqa: E402
from kvbench.analysis.server import KV_USAGE, RSS, RUNNING, WAITING, server_timeseries  # noqa: E402
from kvbench.report.figures import Skipped, _save, _scenario_colors, legend_outside  # noqa: E402

CORRELATION_COLUMNS = {
    "output_tok_s": "output tok/s",
    "ttft_p50_ms": "TTFT p50",
    "tpot_p50_ms": "TPOT p50",
    "kv_usage_mean_pct": "KV usage",
    "running_mean": "running",
    "waiting_mean": "waiting",
    "prefix_hit_rate_pct": "prefix hit %",
    "cpu_hit_share_pct": "CPU hit share",
    "process_rss_mean_gb": "RSS",
    "gpu_utilization_pct": "GPU util",
}


def _timeseries_figure(
    peaks: list[Peak],
    scenarios: list[str],
    metric: str,
    scale: float,
    ylabel: str,
    name: str,
    out: Path,
    combine: str = "mean",
) -> Path | Skipped:
    if not peaks:
        return Skipped(name, "no successful cell")
    models = sorted({p.model for p in peaks})
    curves = {
        (p.model, p.scenario): server_timeseries(p.cells[0], metric, combine)
        for p in peaks
        if p.cells
    }
    if all(c.empty for c in curves.values()):
        return Skipped(name, f"no {metric} samples (no server metrics)")
    colors = _scenario_colors(scenarios)
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        for scenario in scenarios:
            curve = curves.get((model, scenario))
            if curve is None or curve.empty:
                continue
            ax.plot(curve["t_s"], curve["value"] * scale, label=scenario, color=colors[scenario])
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{model.split('/')[-1]} (peak cells; 0 = measure start)", fontsize=9)
        ax.set_xlabel("seconds")
        ax.set_ylabel(ylabel)
    legend_outside(axes[0][-1])
    return _save(fig, out / name)


def kv_usage(peaks, scenarios, out) -> Path | Skipped:
    return _timeseries_figure(
        peaks, scenarios, KV_USAGE, 100.0, "GPU KV-cache usage (%)", "pcp_kv_cache_usage.png", out
    )


def memory_usage(peaks, scenarios, out) -> Path | Skipped:
    return _timeseries_figure(
        peaks,
        scenarios,
        RSS,
        1e-9,
        "server process RSS (GB, mean over engines)",
        "pcp_memory_usage.png",
        out,
    )


def request_queues(server_rows: pd.DataFrame, peaks: list[Peak], out: Path) -> Path | Skipped:
    name = "pcp_request_queues.png"
    if (
        "running_mean" not in server_rows
        or server_rows[["running_mean", "waiting_mean"]].isna().all().all()
    ):
        return Skipped(name, f"no {RUNNING} / {WAITING} samples")
    return _grouped_bars(
        server_rows,
        ["running_mean", "waiting_mean"],
        ["running", "waiting"],
        "mean requests (sum over engines)",
        "Running and waiting requests at peak",
        out / name,
    )


def prefix_hits(server_rows: pd.DataFrame, out: Path) -> Path | Skipped:
    name = "pcp_prefix_cache_hits.png"
    if "prefix_hit_rate_pct" not in server_rows or server_rows["prefix_hit_rate_pct"].isna().all():
        return Skipped(name, "no vllm:prefix_cache_{hits,queries}_total counters")
    return _grouped_bars(
        server_rows,
        ["prefix_hit_rate_pct", "cpu_hit_share_pct", "remote_hit_share_pct"],
        ["GPU prefix hit rate %", "CPU share of hits %", "remote share of hits %"],
        "percent",
        "Prefix-cache hits at peak (counter deltas over the window)",
        out / name,
    )


def _grouped_bars(
    rows: pd.DataFrame, columns: list[str], labels: list[str], ylabel: str, title: str, path: Path
) -> Path:
    rows = rows.assign(label=rows["model"].str.split("/").str[-1] + "\n" + rows["scenario"])
    means = rows.groupby("label", sort=False)[columns].mean()
    x = np.arange(len(means))
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(means) + 2), 4.5))
    for k, (column, label) in enumerate(zip(columns, labels)):
        ax.bar(x + k * width, means[column].fillna(0).to_numpy(), width, label=label)
    ax.set_xticks(
        x + width * (len(columns) - 1) / 2, means.index, rotation=30, ha="right", fontsize=8
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    legend_outside(ax)
    return _save(fig, path)


def correlation_heatmap(joined: pd.DataFrame, out: Path) -> Path | Skipped:
    """Pearson correlation over all successful cells of the columns that vary."""
    name = "pcp_correlation_heatmap.png"
    usable = [
        c
        for c in CORRELATION_COLUMNS
        if c in joined and joined[c].notna().sum() >= 3 and joined[c].std() > 0
    ]
    if len(usable) < 2 or len(joined) < 3:
        return Skipped(name, "fewer than two metrics that vary over at least three cells")
    corr = joined[usable].astype(float).corr()
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(usable), 0.8 * len(usable) + 1))
    image = ax.imshow(corr.to_numpy(), cmap="coolwarm", vmin=-1, vmax=1)
    labels = [CORRELATION_COLUMNS[c] for c in usable]
    ax.set_xticks(range(len(usable)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(usable)), labels, fontsize=8)
    for i in range(len(usable)):
        for j in range(len(usable)):
            value = corr.iat[i, j]
            ax.text(
                j,
                i,
                "" if np.isnan(value) else f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
            )
    ax.set_title(f"Correlation across {len(joined)} cells (Pearson)")
    fig.colorbar(image, ax=ax)
    return _save(fig, out / name)
