"""Latency deltas vs baseline: planted effects with known answers, cluster bootstrap, routing view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.synth import SynthCell, matrix, write_run
from kvbench.analysis.latency import (
    common_level,
    conversation_cluster,
    latency_comparisons,
    latency_table,
    ok_cells_by_key,
    select,
)
from kvbench.analysis.latency_guidance import latency_findings, latency_guidance
from kvbench.analysis.load import CellData, load_run
from kvbench.analysis.metrics import complete_metrics
from kvbench.analysis.peaks import Peak, find_peaks
from kvbench.analysis.routing import endpoint_table, prediction_table
from kvbench.analysis.stats import Interval, cluster_delta, request_delta
from kvbench.results.layout import CellInfo, CellStatus
from kvbench.results.records import REQUEST_SCHEMA, RequestRecord

MODEL = "Qwen/Qwen3-8B"


def _latency(run_dir):
    run = load_run(run_dir)
    rng = np.random.default_rng(0)
    peaks = find_peaks(run, complete_metrics(run), rng)
    return run, peaks, latency_comparisons(run, peaks, rng)


def _one(comparisons, scenario, stat, basis="common"):
    (c,) = select(comparisons, scenario=scenario, stat=stat, basis=basis)
    return c


def test_single_repeat_planted_minus_30_percent_ttft_is_indicative_and_not_recommended(tmp_path):
    cells = [
        SynthCell(scenario="no-offload", ttft_ms=50.0),
        SynthCell(scenario="lmcache-local", ttft_ms=35.0),
    ]
    run, peaks, comparisons = _latency(write_run(tmp_path, cells))
    for stat in ("ttft_mean", "ttft_p50"):
        c = _one(comparisons, "lmcache-local", stat)
        assert c.delta.significant and c.delta.evidence == "single-run"
        assert c.verdict == "indicative lower"
        assert c.delta.low_pct > -40 and c.delta.high_pct < -20
        assert c.delta.delta_pct == pytest.approx(-30, abs=3)
        assert c.delta.method.startswith(
            "cluster bootstrap within single cells: conversations resampled"
        )
    assert (
        _one(comparisons, "lmcache-local", "tpot_p50").verdict == "no significant difference"
    )  # TPOT planted equal
    (guidance,) = latency_guidance(comparisons, peaks, run.baseline)
    assert (
        "keep **no-offload** for TTFT too" in guidance.text
        and "**lmcache-local**" not in guidance.text
    )
    assert "Indicative: lmcache-local lowers TTFT mean by 29." in guidance.text
    assert "in this run (1 repeat per side); confirm with repeats: 3." in guidance.text
    assert guidance.text.endswith("confirm with repeats: 3.")
    (finding,) = latency_findings(comparisons, run.baseline)
    assert "TTFT mean 35." in finding.text
    assert (
        "indicative lower, i.e. significant within this run (1 repeat; run-to-run variance not measured)"
        in finding.text
    )
    assert "Significantly lower: TTFT mean -" in finding.text and "(indicative)" in finding.text
    table = latency_table(comparisons).set_index(["scenario", "basis", "statistic"])
    row = table.loc[("lmcache-local", "common", "ttft_mean")]
    assert (row["verdict"], row["evidence"]) == ("indicative lower", "single-run")
    assert table.loc[("no-offload", "common", "ttft_mean"), "verdict"] == "baseline"


def test_three_repeat_planted_ttft_reduction_is_recommended(tmp_path):
    cells = matrix(
        [MODEL], ["no-offload", "lmcache-local"], [8], 3, lmcache_local=dict(ttft_ms=35.0)
    )
    run, peaks, comparisons = _latency(write_run(tmp_path, cells))
    c = _one(comparisons, "lmcache-local", "ttft_mean")
    assert (c.verdict, c.delta.evidence) == ("lower", "paired-repeats")
    (guidance,) = latency_guidance(comparisons, peaks, run.baseline)
    assert "**lmcache-local** significantly lowers TTFT mean by 29." in guidance.text
    assert -35 < c.delta.low_pct < c.delta.high_pct < -25
    assert "Indicative" not in guidance.text


def test_noise_only_ttft_difference_is_not_significant(tmp_path):
    cells = [
        SynthCell(scenario="no-offload", ttft_ms=50.0),
        SynthCell(scenario="lmcache-local", ttft_ms=50.0),
    ]
    run, peaks, comparisons = _latency(write_run(tmp_path, cells))
    for stat in ("ttft_mean", "ttft_p50", "e2e_p50"):
        c = _one(comparisons, "lmcache-local", stat)
        assert c.verdict == "no significant difference"
        assert c.delta.low_pct < 0 < c.delta.high_pct
    (guidance,) = latency_guidance(comparisons, peaks, run.baseline)
    assert (
        "no scenario lowered TTFT mean on firm evidence" in guidance.text
        and "keep **no-offload**" in guidance.text
    )
    assert "Indicative" not in guidance.text


def test_aligned_repeats_use_the_paired_bootstrap(tmp_path):
    cells = matrix(
        [MODEL], ["no-offload", "native-offload"], [8], 3, native_offload=dict(ttft_ms=70.0)
    )
    _, _, comparisons = _latency(write_run(tmp_path, cells))
    c = _one(comparisons, "native-offload", "ttft_mean")
    assert c.delta.method.startswith("paired bootstrap over 3 repeat pairs")
    assert c.verdict == "higher" and c.repeats == 3


def test_common_level_is_the_highest_level_every_scenario_ran(tmp_path):
    cells = matrix([MODEL], ["no-offload"], [4, 8], 1) + matrix([MODEL], ["lmcache-local"], [4], 1)
    run, _, comparisons = _latency(write_run(tmp_path, cells))
    assert common_level(ok_cells_by_key(run), MODEL, ["no-offload", "lmcache-local"]) == 4.0
    assert {c.level for c in select(comparisons, basis="common")} == {4.0}
    assert _one(comparisons, "no-offload", "ttft_mean", basis="peak").level == 8.0


def test_cluster_bootstrap_resamples_conversations_not_requests():
    rng = np.random.default_rng(1)
    # 8 conversations per side of 25 identical requests each: the information is 8 draws, not 200.
    base_means, treat_means = rng.normal(100, 20, 8), rng.normal(100, 20, 8)
    base, treat = np.repeat(base_means, 25), np.repeat(treat_means, 25)
    clusters = np.repeat([f"c{i}" for i in range(8)], 25)
    clustered = cluster_delta(base, clusters, treat, clusters, np.random.default_rng(2))
    naive = request_delta(base, treat, np.random.default_rng(2))
    assert clustered.n == 8
    assert clustered.delta_pct == pytest.approx(naive.delta_pct)
    assert (clustered.high_pct - clustered.low_pct) > 3 * (naive.high_pct - naive.low_pct)
    # Each resample of clustered data draws whole clusters: with one value per cluster it equals the request bootstrap.
    one_each = cluster_delta(
        base_means, np.arange(8), treat_means, np.arange(8), np.random.default_rng(3)
    )
    plain = request_delta(base_means, treat_means, np.random.default_rng(3))
    assert (one_each.low_pct, one_each.high_pct) == pytest.approx((plain.low_pct, plain.high_pct))


def test_recycled_passes_of_a_conversation_form_one_cluster():
    ids = pd.Series(["c1", "c1~c1", "c1~c12", "c2", "c10~c3"])
    assert conversation_cluster(ids).tolist() == ["c1", "c1", "c1", "c2", "c10"]


def _peak_of(rows) -> Peak:
    info = CellInfo(
        cell_id="x",
        model=MODEL,
        scenario="llm-d-redis",
        base_scenario="llm-d-redis",
        level=8,
        repeat=0,
        status=CellStatus.OK,
    )
    cell = CellData(
        info=info,
        requests=pd.DataFrame(rows, columns=REQUEST_SCHEMA.names),
        server=pd.DataFrame(),
        system=pd.DataFrame(),
    )
    return Peak(MODEL, "llm-d-redis", "llm-d-redis", 8.0, Interval(1, 1, 1, 1), [cell], {0: 1.0})


def test_routing_view_counts_endpoints_and_scores_router_predictions():
    def req(i, endpoint, prompt, cached, predicted):
        return RequestRecord(
            request_id=str(i),
            conversation_id=f"c{i}",
            turn_index=0,
            cell_id="x",
            prompt_tokens=prompt,
            cached_tokens=cached,
            endpoint=endpoint,
            router_predicted_hit_tokens=predicted,
        ).to_row()

    rows = [
        req(0, "a", 1000, 800, 800),
        req(1, "a", 1000, 0, 500),
        req(2, "a", 1000, 600, 0),
        req(3, "b", 500, 100, 200),
    ]
    peak = _peak_of(rows)
    endpoints = endpoint_table([peak]).set_index("endpoint")
    assert endpoints.loc["a", "requests"] == 3 and endpoints.loc[
        "a", "request_share_pct"
    ] == pytest.approx(75.0)
    assert endpoints.loc["a", "hit_rate_pct"] == pytest.approx(100 * 1400 / 3000)
    assert endpoints.loc["b", "hit_rate_pct"] == pytest.approx(20.0)
    (pred,) = prediction_table([peak]).to_dict("records")
    # matched = min per request: 800 + 0 + 0 + 100 = 900 of 1500 cached and of 1500 predicted
    assert pred["matched_tokens"] == 900
    assert pred["predicted_share_of_hits_pct"] == pytest.approx(60.0)
    assert pred["predictions_realised_pct"] == pytest.approx(60.0)
    assert pred["requests_predicted_but_missed"] == 1
