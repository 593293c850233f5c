"""Client-side figures (matplotlib, Agg backend, PNG). Each function returns the path written, or a
`Skipped` saying why the figure could not be drawn (the report lists those)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from kvbench.analysis.load import measure_requests  # noqa: E402
from kvbench.analysis.metrics import ok_requests  # noqa: E402
from kvbench.analysis.peaks import Peak, level_summary  # noqa: E402
from kvbench.report.figures_delta import draw_delta_grid  # noqa: E402

DPI = 110


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # keeps a legend placed outside the axes
    plt.close(fig)
    return path


def legend_outside(ax) -> None:
    """The legend right of the axes, never over the data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _whisker(interval) -> float:
    """Half-width of the 95 % interval over repeats; 0 where one repeat gives no interval."""
    return 0.0 if math.isnan(interval.high) else interval.high - interval.mean


def _scenario_colors(scenarios: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {s: cmap(i % 10) for i, s in enumerate(scenarios)}


def peak_throughput_bars(peaks: list[Peak], scenarios: list[str], out: Path) -> Path | Skipped:
    name = "peak_throughput_all_scenarios.png"
    if not peaks:
        return Skipped(name, "no successful cell")
    models = sorted({p.model for p in peaks})
    colors = _scenario_colors(scenarios)
    width = 0.8 / max(1, len(scenarios))
    one_repeat = all(p.throughput.n < 2 for p in peaks)
    fig, ax = plt.subplots(
        figsize=(max(7, 1.8 * len(models) * max(1, len(scenarios)) / 3 + 2), 4.5)
    )
    for j, scenario in enumerate(scenarios):
        xs, ys, errs = [], [], []
        for i, model in enumerate(models):
            peak = next((p for p in peaks if p.model == model and p.scenario == scenario), None)
            if peak is None:
                continue
            xs.append(i + j * width)
            ys.append(peak.throughput.mean)
            errs.append(_whisker(peak.throughput))
        ax.bar(
            xs,
            ys,
            width,
            yerr=None if one_repeat else errs,
            capsize=3,
            label=scenario,
            color=colors[scenario],
        )
    ax.set_xticks([i + width * (len(scenarios) - 1) / 2 for i in range(len(models))])
    ax.set_xticklabels([m.split("/")[-1] for m in models])
    ax.set_ylabel("peak output throughput (tok/s)")
    ax.set_title(
        "Peak output throughput by scenario"
        + (" (one repeat: no interval)" if one_repeat else " (whiskers: 95 % CI over repeats)")
    )
    legend_outside(ax)
    return _save(fig, out / name)


def throughput_curves(
    metrics: pd.DataFrame, scenarios: list[str], out: Path
) -> list[Path | Skipped]:
    """Per model: throughput vs load with 95 % whiskers; with one load level, bars with whiskers
    (a 'curve' of single dots says nothing)."""
    summary = level_summary(metrics)
    if summary.empty:
        return [Skipped("throughput_curve_<model>_all.png", "no successful cell")]
    colors = _scenario_colors(scenarios)
    written: list[Path | Skipped] = []
    for model, group in summary.groupby("model"):
        short = model.split("/")[-1]
        if group["level"].nunique() == 1:
            written.append(
                _throughput_bars(group, scenarios, colors, out / f"throughput_bars_{short}.png")
            )
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        span = float(group["level"].max() - group["level"].min())
        for j, scenario in enumerate(scenarios):
            rows = group[group["scenario"] == scenario].sort_values("level")
            if rows.empty:
                continue
            half = (rows["output_tok_s_ci_high"] - rows["output_tok_s_mean"]).fillna(0.0)
            dodge = (j - (len(scenarios) - 1) / 2) * 0.008 * span  # twins that agree stay visible
            ax.errorbar(
                rows["level"] + dodge,
                rows["output_tok_s_mean"],
                yerr=half if half.gt(0).any() else None,
                marker="o",
                capsize=3,
                label=scenario,
                color=colors[scenario],
            )
        ax.set_xlabel("load level")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("output throughput (tok/s)")
        ax.set_title(f"{short}: throughput vs load (whiskers: 95 % CI over repeats)")
        legend_outside(ax)
        written.append(_save(fig, out / f"throughput_curve_{short}_all.png"))
    return written


def _throughput_bars(group: pd.DataFrame, scenarios: list[str], colors: dict, path: Path) -> Path:
    rows = group.set_index("scenario")
    present = [s for s in scenarios if s in rows.index]
    means = [float(rows.loc[s, "output_tok_s_mean"]) for s in present]
    half = [
        float(rows.loc[s, "output_tok_s_ci_high"] - rows.loc[s, "output_tok_s_mean"])
        for s in present
    ]
    has_interval = not all(math.isnan(h) for h in half)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(present) + 2), 4.5))
    ax.bar(
        range(len(present)),
        means,
        yerr=[0.0 if math.isnan(h) else h for h in half] if has_interval else None,
        capsize=4,
        color=[colors[s] for s in present],
    )
    ax.set_xticks(range(len(present)), present, rotation=30, ha="right")
    ax.set_ylim(0, max(means) * 1.15 if means else 1)
    level = float(group["level"].iloc[0])
    ax.set_ylabel("output throughput (tok/s)")
    ax.set_title(
        f"{group['model'].iloc[0].split('/')[-1]} at level {level:g}"
        + (" (whiskers: 95 % CI over repeats)" if has_interval else " (one repeat: no interval)")
    )
    return _save(fig, path)


def latency_comparison(
    peaks: list[Peak], metrics: pd.DataFrame, scenarios: list[str], out: Path
) -> Path | Skipped:
    name = "latency_comparison_all.png"
    if not peaks:
        return Skipped(name, "no successful cell")
    ids = {c.cell_id for p in peaks for c in p.cells}
    rows = metrics[metrics["cell_id"].isin(ids)]
    means = rows.groupby(["model", "scenario"])[
        ["ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms"]
    ].mean()
    models = sorted({p.model for p in peaks})
    colors = _scenario_colors(scenarios)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(1, len(scenarios))
    for ax, metric in zip(axes, ("ttft", "tpot")):
        for j, scenario in enumerate(scenarios):
            xs, p50, p99 = [], [], []
            for i, model in enumerate(models):
                if (model, scenario) in means.index:
                    xs.append(i + j * width)
                    p50.append(means.loc[(model, scenario), f"{metric}_p50_ms"])
                    p99.append(means.loc[(model, scenario), f"{metric}_p99_ms"])
            ax.bar(xs, p50, width, color=colors[scenario], label=scenario)
            ax.scatter(xs, p99, marker="_", s=120, color="black")
        ax.set_xticks([i + width * (len(scenarios) - 1) / 2 for i in range(len(models))])
        ax.set_xticklabels([m.split("/")[-1] for m in models])
        ax.set_ylabel(f"{metric.upper()} (ms): bar p50, tick p99")
        ax.set_title(
            f"{metric.upper()} at each scenario's peak"
            + (" (vLLM TPOT)" if metric == "tpot" else "")
        )
    legend_outside(axes[1])
    return _save(fig, out / name)


def delta_heatmap(peaks: list[Peak], baseline: str, out: Path) -> Path | Skipped:
    name = "performance_delta_heatmap_all.png"
    others = [p for p in peaks if p.scenario != baseline and not math.isnan(p.delta.delta_pct)]
    if not others:
        return Skipped(name, f"no scenario with a delta against the baseline {baseline}")
    models = sorted({p.model for p in others})
    scenarios = list(dict.fromkeys(p.scenario for p in others))
    cells = {(models.index(p.model), scenarios.index(p.scenario)): p.delta for p in others}
    fig, ax = plt.subplots(figsize=(1.6 * len(scenarios) + 3, 0.8 * len(models) + 2))
    draw_delta_grid(ax, fig, cells, (len(models), len(scenarios)), "RdYlGn")
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=30, ha="right")
    ax.set_yticks(range(len(models)), [m.split("/")[-1] for m in models])
    ax.set_title(f"Peak throughput delta vs {baseline} (higher is better)")
    return _save(fig, out / name)


def _peak_requests(peaks: list[Peak]) -> pd.DataFrame:
    frames = []
    for p in peaks:
        for cell in p.cells:
            ok = ok_requests(measure_requests(cell))
            if not ok.empty:
                frames.append(ok.assign(model=p.model_short, scenario=p.scenario))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def ttft_by_turn(peaks: list[Peak], scenarios: list[str], out: Path) -> Path | Skipped:
    name = "ttft_by_turn.png"
    data = _peak_requests(peaks)
    if data.empty or data["turn_index"].nunique() < 2:
        return Skipped(name, "requests carry fewer than two distinct turn indices")
    return _ttft_lines(
        data,
        "turn_index",
        "turn index",
        scenarios,
        out / name,
        "TTFT p50 by turn (peak cells)",
        integer_x=True,
    )


def ttft_by_reused_prefix(peaks: list[Peak], scenarios: list[str], out: Path) -> Path | Skipped:
    name = "ttft_by_reused_prefix.png"
    data = _peak_requests(peaks)
    if (
        data.empty
        or data["reused_prefix_tokens"].isna().all()
        or data["reused_prefix_tokens"].nunique() < 2
    ):
        return Skipped(name, "requests carry no reused-prefix lengths (or only one)")
    reused = pd.to_numeric(data["reused_prefix_tokens"], errors="coerce")
    edges = np.unique(np.quantile(reused.dropna(), np.linspace(0, 1, 7)))
    data = data.assign(
        reused_bin=pd.cut(reused, edges, include_lowest=True).apply(
            lambda b: b.mid if pd.notna(b) else np.nan
        )
    )
    return _ttft_lines(
        data,
        "reused_bin",
        "reused prefix tokens (bin centre)",
        scenarios,
        out / name,
        "TTFT p50 by reused-prefix length (peak cells)",
    )


def _ttft_lines(
    data: pd.DataFrame,
    key: str,
    xlabel: str,
    scenarios: list[str],
    path: Path,
    title: str,
    min_per_point: int = 1,
    log_x: bool = False,
    integer_x: bool = False,
) -> Path:
    """TTFT p50 per value of `key`, one line per scenario, one panel per model; a point needs
    `min_per_point` requests."""
    models = sorted(data["model"].unique())
    colors = _scenario_colors(scenarios)
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        for scenario in scenarios:
            rows = data[(data["model"] == model) & (data["scenario"] == scenario)]
            if rows.empty:
                continue
            grouped = rows.groupby(key)["ttft_ms"].agg(["size", "median"])
            medians = grouped.loc[grouped["size"] >= min_per_point, "median"]
            ax.plot(
                medians.index.astype(float),
                medians.to_numpy(),
                marker="o",
                label=scenario,
                color=colors[scenario],
            )
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:.2g}"))
        if integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{model}: {title}", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("TTFT p50 (ms)")
    legend_outside(axes[0][-1])
    return _save(fig, path)
