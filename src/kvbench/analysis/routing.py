"""Routing view of the peak cells, from the per-request records.

- per endpoint: successful measure-phase requests, their share, and the cached-token share
  (sum cached_tokens / sum prompt_tokens over requests that reported cached tokens);
- router prediction (router scenarios, where records carry `router_predicted_hit_tokens`):
  predicted hit tokens vs the cached tokens the engine reported, per request. Matched tokens =
  sum of min(predicted, cached); "predicted share of hits" = matched / cached (the hits the router
  saw coming), "predictions realised" = matched / predicted (predicted hits that really happened).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from kvbench.analysis.load import CellData, measure_requests
from kvbench.analysis.metrics import ok_requests
from kvbench.analysis.peaks import Peak


def engine_names(cell: CellData) -> dict[str, str]:
    """Stable engine names (`engine-0`, ...) by the address each engine served on in this cell.

    Ports are ephemeral and change every cell; the names come from the cell's metric sources
    (`engine-0` -> `http://127.0.0.1:37093/metrics`), so `127.0.0.1:37093` -> `engine-0`."""
    names = {}
    for source, url in cell.info.sources.items():
        if source.startswith("engine"):
            address = urlsplit(url).netloc
            if address:
                names[address] = source
    return names


def _named_endpoints(frame: pd.DataFrame, cell: CellData) -> pd.DataFrame:
    names = engine_names(cell)
    address = frame["endpoint"].astype("object")
    return frame.assign(
        endpoint_url=address,
        endpoint=address.map(lambda a: names.get(a, a) if isinstance(a, str) else a),
    )


def _ok_frame(peak: Peak) -> pd.DataFrame:
    frames = [_named_endpoints(ok_requests(measure_requests(c)), c) for c in peak.cells]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def endpoint_table(peaks: list[Peak]) -> pd.DataFrame:
    """One row per (model, scenario, endpoint) over all repeats of each peak level."""
    rows = []
    for peak in peaks:
        ok = _ok_frame(peak)
        if ok.empty or ok["endpoint"].isna().all():
            continue
        total = len(ok)
        for endpoint, group in ok.groupby(ok["endpoint"].fillna("(unknown)"), sort=True):
            cached = pd.to_numeric(group["cached_tokens"], errors="coerce")
            prompt = pd.to_numeric(group["prompt_tokens"], errors="coerce")[cached.notna()]
            rows.append(
                {
                    "model": peak.model,
                    "scenario": peak.scenario,
                    "level": peak.level,
                    "endpoint": endpoint,
                    "endpoint_urls": ", ".join(sorted(set(group["endpoint_url"].dropna()))),
                    "requests": len(group),
                    "request_share_pct": 100.0 * len(group) / total,
                    "prompt_tokens": float(prompt.sum()),
                    "cached_tokens": float(cached.sum()),
                    "hit_rate_pct": 100.0 * float(cached.sum()) / float(prompt.sum())
                    if prompt.sum() > 0
                    else math.nan,
                }
            )
    return pd.DataFrame(rows)


def prediction_table(peaks: list[Peak]) -> pd.DataFrame:
    """One row per (model, scenario) whose records carry router predictions and cached tokens."""
    rows = []
    for peak in peaks:
        ok = _ok_frame(peak)
        if ok.empty:
            continue
        predicted = pd.to_numeric(ok["router_predicted_hit_tokens"], errors="coerce")
        cached = pd.to_numeric(ok["cached_tokens"], errors="coerce")
        both = predicted.notna() & cached.notna()
        if not both.any():
            continue
        p, c = predicted[both], cached[both]
        matched = float(pd.concat([p, c], axis=1).min(axis=1).sum())
        rows.append(
            {
                "model": peak.model,
                "scenario": peak.scenario,
                "level": peak.level,
                "requests": int(both.sum()),
                "predicted_hit_tokens": float(p.sum()),
                "cached_tokens": float(c.sum()),
                "matched_tokens": matched,
                "predicted_share_of_hits_pct": 100.0 * matched / float(c.sum())
                if c.sum() > 0
                else math.nan,
                "predictions_realised_pct": 100.0 * matched / float(p.sum())
                if p.sum() > 0
                else math.nan,
                "requests_predicted_but_missed": int(((p > 0) & (c == 0)).sum()),
            }
        )
    return pd.DataFrame(rows)


def routing_sentence(
    endpoints: pd.DataFrame, predictions: pd.DataFrame, model: str, scenario: str
) -> str | None:
    mine = (
        endpoints[(endpoints["model"] == model) & (endpoints["scenario"] == scenario)]
        if not endpoints.empty
        else endpoints
    )
    if mine.empty:
        return None
    top = mine.loc[mine["request_share_pct"].idxmax()]
    text = (
        f"{scenario}: endpoint {top['endpoint']} served {top['request_share_pct']:.0f} % of "
        f"{int(mine['requests'].sum())} requests (cached-token share there {top['hit_rate_pct']:.1f} %)"
    )
    pred = (
        predictions[(predictions["model"] == model) & (predictions["scenario"] == scenario)]
        if not predictions.empty
        else predictions
    )
    if not pred.empty and pred.iloc[0]["predicted_hit_tokens"] > 0:
        row = pred.iloc[0]
        text += (
            f"; the router predicted {row['predicted_share_of_hits_pct']:.0f} % of the hit tokens that occurred, "
            f"and {row['predictions_realised_pct']:.0f} % of its predicted hit tokens were realised "
            f"({row['requests_predicted_but_missed']} requests predicted to hit got no cached tokens)"
        )
    return text + "."


def router_scorers(run_dir: Path, model: str, scenario: str) -> str | None:
    """'scorer x weight, ...' from the emulated router's decision log of this (model, scenario), if any.

    The emulated stack writes logs/<NN>-<model short>__<scenario>/router-decisions.jsonl, one JSON
    object per routing decision with a `weights` map (scorer -> weight)."""
    short = model.split("/")[-1]
    for path in sorted(
        (Path(run_dir) / "logs").glob(f"*-{short}__{scenario}/router-decisions.jsonl")
    ):
        try:
            with path.open() as handle:
                first = handle.readline()
            weights = json.loads(first).get("weights") or {}
        except (OSError, ValueError):
            return None
        return ", ".join(f"{name} x{weight:g}" for name, weight in weights.items()) or None
    return None
