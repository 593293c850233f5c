"""`kvbench compare RUN_A RUN_B`: the same cells of two runs side by side.

A side is one run directory, or several joined by commas (e.g. a real run split over two
commands). Cells are matched on (model, base scenario, level, repeat); every cell's numbers are
recomputed from its requests.parquet by results.summary.summarize (the one computation), so runs
written by older kvbench versions compare on the same definitions. Per matched cell and metric:
A, B and B vs A (relative for rates and latencies, points for the cached-prompt fraction). The
offload gain of a (model, level, repeat) is native-offload's output tok/s over no-offload's, minus
one, per side; its difference is in points.

Writes compare.md (the table), compare.csv (one row per cell and metric) and compare.png (B / A
per metric and cell) into the output directory (default: RUN_B/compare/).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kvbench.errors import UserError
from kvbench.results.read import read_cell_info, read_manifest
from kvbench.results.records import records_from_frame
from kvbench.results.summary import CellSummary, summarize

# (CellSummary field, label, kind): kind "rate" / "latency" compare relatively, "fraction" in points
METRICS = (
    ("output_tokens_per_s", "tok/s", "rate"),
    ("ttft_mean_ms", "TTFT mean ms", "latency"),
    ("ttft_p50_ms", "TTFT p50 ms", "latency"),
    ("ttft_p90_ms", "TTFT p90 ms", "latency"),
    ("tpot_p50_ms", "TPOT p50 ms", "latency"),
    ("itl_p50_ms", "ITL p50 ms", "latency"),
    ("cached_prompt_fraction", "cached fraction", "fraction"),
)
OFFLOAD = ("native-offload", "no-offload")  # (with the CPU tier, baseline)

CellKey = tuple[str, str, float, int]  # model, base scenario, level, repeat


@dataclass(frozen=True)
class SideCell:
    key: CellKey
    summary: CellSummary
    system: str  # the run's system under test, e.g. "vllm" / "emulated"


@dataclass(frozen=True)
class MetricRow:
    key: CellKey
    metric: str
    a: float | None
    b: float | None
    kind: str

    @property
    def difference(self) -> float | None:
        """B vs A: relative (rates, latencies) or in points (fractions, gains)."""
        if self.a is None or self.b is None:
            return None
        if self.kind in ("fraction", "gain"):
            return (self.b - self.a) * 100.0
        return self.b / self.a - 1.0 if self.a else None

    def difference_text(self) -> str:
        diff = self.difference
        if diff is None:
            return "—"
        return f"{diff:+.1f} pt" if self.kind in ("fraction", "gain") else f"{diff:+.1%}"


def read_side(spec: str) -> dict[CellKey, SideCell]:
    cells: dict[CellKey, SideCell] = {}
    for part in spec.split(","):
        run_dir = Path(part)
        manifest_path = run_dir / "manifest.json"
        if not manifest_path.is_file():
            raise UserError(f"compare: {run_dir} is not a kvbench run directory (no manifest.json)")
        system = read_manifest(manifest_path).system_under_test
        system_kind = system.kind if system is not None else "?"
        for cell_json in sorted(run_dir.glob("cells/*/cell.json")):
            info = read_cell_info(cell_json)
            requests = cell_json.parent / "requests.parquet"
            if info.status.value != "ok" or not requests.exists():  # a file or a folder of parts
                continue
            records = records_from_frame(pd.read_parquet(requests))
            summary = summarize(records, info.measure_start_s, info.measure_end_s)
            key = (info.model, info.base_scenario, float(info.level), int(info.repeat))
            cells[key] = SideCell(key, summary, system_kind)
    return cells


def compare_cells(a: dict[CellKey, SideCell], b: dict[CellKey, SideCell]) -> list[MetricRow]:
    rows: list[MetricRow] = []
    for key in sorted(set(a) & set(b)):
        for field, _, kind in METRICS:
            rows.append(
                MetricRow(
                    key, field, getattr(a[key].summary, field), getattr(b[key].summary, field), kind
                )
            )
    for key in sorted(set(a) & set(b)):
        model, scenario, level, repeat = key
        if scenario != OFFLOAD[0]:
            continue
        base_key = (model, OFFLOAD[1], level, repeat)
        if base_key in a and base_key in b:
            rows.append(
                MetricRow(
                    key, "offload_gain", _gain(a, key, base_key), _gain(b, key, base_key), "gain"
                )
            )
    return rows


def _gain(side: dict[CellKey, SideCell], key: CellKey, base_key: CellKey) -> float | None:
    with_tier = side[key].summary.output_tokens_per_s
    base = side[base_key].summary.output_tokens_per_s
    return with_tier / base - 1.0 if with_tier and base else None


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "—"
    if kind in ("fraction", "gain"):
        return f"{value * 100:.1f}%"
    return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"


def markdown(rows: list[MetricRow], a_name: str, b_name: str) -> str:
    labels = {field: label for field, label, _ in METRICS} | {"offload_gain": "offload gain"}
    lines = [
        f"| Model | Scenario | Level | Metric | A ({a_name}) | B ({b_name}) | B vs A |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        model, scenario, level, _ = row.key
        lines.append(
            f"| {model.split('/')[-1]} | {scenario} | {level:g} | {labels[row.metric]} | "
            f"{_fmt(row.a, row.kind)} | {_fmt(row.b, row.kind)} | {row.difference_text()} |"
        )
    return "\n".join(lines) + "\n"


def write_csv(rows: list[MetricRow], path: Path) -> None:
    with path.open("w", newline="") as sink:
        writer = csv.writer(sink)
        writer.writerow(["model", "scenario", "level", "repeat", "metric", "a", "b", "difference"])
        for row in rows:
            writer.writerow([*row.key, row.metric, row.a, row.b, row.difference])


def write_figure(rows: list[MetricRow], path: Path, a_name: str, b_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratio_rows = [r for r in rows if r.kind in ("rate", "latency") and r.difference is not None]
    cells = sorted({r.key for r in ratio_rows})
    metrics = [field for field, _, kind in METRICS if kind != "fraction"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(metrics) + 2), 3.6))
    width = 0.8 / max(len(cells), 1)
    for index, cell in enumerate(cells):
        values = {r.metric: 1 + (r.difference or 0.0) for r in ratio_rows if r.key == cell}
        xs = [m + index * width for m in range(len(metrics))]
        label = f"{cell[0].split('/')[-1]} {cell[1]} @{cell[2]:g}"
        ax.bar(xs, [values.get(m, float("nan")) for m in metrics], width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))])
    ax.set_xticklabels([m.replace("_", " ") for m in metrics], fontsize=8)
    ax.set_ylabel(f"{b_name} / {a_name}")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def side_name(side: dict[CellKey, SideCell]) -> str:
    """What measured a side (its first cell's system), as the tables name it."""
    return next(iter(side.values())).system


def write_tables(
    rows: list[MetricRow], a_name: str, b_name: str, out_dir: Path, stem: str = "compare"
) -> None:
    """STEM.md, STEM.csv and STEM.png of `rows` in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.md").write_text(markdown(rows, a_name, b_name))
    write_csv(rows, out_dir / f"{stem}.csv")
    write_figure(rows, out_dir / f"{stem}.png", a_name, b_name)


def write_comparison(run_a: Path | str, run_b: Path | str, out: Path | None = None) -> Path:
    side_a, side_b = read_side(str(run_a)), read_side(str(run_b))
    rows = compare_cells(side_a, side_b)
    if not rows:
        raise UserError(f"compare: {run_a} and {run_b} have no cell in common")
    out_dir = out or Path(str(run_b).split(",")[0]) / "compare"
    write_tables(rows, side_name(side_a), side_name(side_b), out_dir)
    return out_dir
