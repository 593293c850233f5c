"""Analysis on synthetic run directories with planted effects (tests/analysis/synth.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.synth import SynthCell, matrix, write_run
from kvbench.analysis.guidance import build_findings, deployment_guidance
from kvbench.analysis.load import load_run
from kvbench.analysis.metrics import complete_metrics
from kvbench.analysis.peaks import find_peaks, peak_of
from kvbench.analysis.server import counter_increase, histogram_quantile
from kvbench.analysis.stats import paired_delta, t_interval
from kvbench.analysis.twins import downgrade, failed_models, twin_checks, twin_deltas
from kvbench.analysis.validity import CheckStatus, run_checks
from kvbench.errors import UserError

MODEL = "Qwen/Qwen3-8B"


def analyse(run_dir):
    run = load_run(run_dir)
    metrics = complete_metrics(run)
    rng = np.random.default_rng(0)
    peaks = find_peaks(run, metrics, rng)
    twins = twin_deltas(run, peaks, rng)
    aa_checks = twin_checks(run, twins)
    downgrade(peaks, [], failed_models(aa_checks))
    checks = aa_checks + run_checks(run, peaks)
    return (
        run,
        metrics,
        peaks,
        checks,
        build_findings(run, peaks, checks, twins),
        deployment_guidance(run, peaks, checks),
    )


def flags(checks, name):
    return [c for c in checks if c.name == name and c.status == CheckStatus.FLAG]


def test_planted_ten_percent_gain_with_tight_interval_is_a_gain(tmp_path):
    cells = matrix(
        [MODEL],
        ["no-offload", "native-offload"],
        [4, 8],
        3,
        no_offload=dict(noise_sd=0.01),
        native_offload=dict(noise_sd=0.01, throughput_factor=1.10),
    )
    run, _, peaks, _, findings, guidance = analyse(write_run(tmp_path, cells))
    peak = peak_of(peaks, MODEL, "native-offload")
    assert peak.level == 8
    assert peak.delta.verdict == "gain"
    assert 5 < peak.delta.low_pct < peak.delta.delta_pct < peak.delta.high_pct < 15
    assert "paired bootstrap over 3 repeat pairs" in peak.delta.method
    assert peak.delta.evidence == "paired-repeats"
    assert any("native-offload pays" in f.text for f in findings)
    assert "use **native-offload**" in guidance[0].text


def test_noise_only_difference_is_not_significant(tmp_path):
    cells = matrix(
        [MODEL],
        ["no-offload", "lmcache-local"],
        [8],
        3,
        no_offload=dict(noise_sd=0.03),
        lmcache_local=dict(noise_sd=0.03),
    )
    _, _, peaks, _, findings, guidance = analyse(write_run(tmp_path, cells, seed=11))
    delta = peak_of(peaks, MODEL, "lmcache-local").delta
    assert delta.low_pct < 0 < delta.high_pct
    assert delta.verdict == "no significant difference"
    text = " ".join(f.text for f in findings)
    assert "lmcache-local makes no significant difference" in text
    assert "pays" not in text and "costs" not in text
    assert "keep **no-offload**" in guidance[0].text


def test_single_repeat_gain_is_indicative_and_not_recommended(tmp_path):
    cells = matrix(
        [MODEL],
        ["no-offload", "native-offload", "lmcache-local"],
        [8],
        1,
        native_offload=dict(throughput_factor=1.10),
    )
    _, _, peaks, _, findings, guidance = analyse(write_run(tmp_path, cells))
    gain = peak_of(peaks, MODEL, "native-offload").delta
    same = peak_of(peaks, MODEL, "lmcache-local").delta
    assert "time slices" in gain.method
    assert gain.significant and gain.evidence == "single-run"
    assert gain.verdict == "indicative gain"
    assert same.verdict == "no significant difference"
    assert any(
        "native-offload may pay (indicative gain, 1 repeat per side)" in f.text for f in findings
    )
    (deployment,) = guidance
    assert "keep **no-offload**" in deployment.text and "use **" not in deployment.text
    assert (
        "Indicative: native-offload raises peak output throughput by 9." in deployment.text
        and "(+9." in deployment.text
    )
    assert deployment.text.endswith("confirm with repeats: 3.")


def test_client_bound_cell_is_flagged_with_evidence(tmp_path):
    cells = [
        SynthCell(scenario="no-offload"),
        SynthCell(scenario="native-offload", client_lag_ms=200.0),
    ]
    _, _, _, checks, _, guidance = analyse(write_run(tmp_path, cells))
    flagged = flags(checks, "client keeps up")
    assert [c.subject for c in flagged] == ["Qwen3-8B__native-offload__8__r0"]
    assert "dispatch_lag_ms p99 200.0 ms" in flagged[0].evidence


def test_emulator_bound_cell_is_flagged(tmp_path):
    cells = [SynthCell(scenario="no-offload", step_lag_s=0.2)]
    _, _, _, checks, _, _ = analyse(write_run(tmp_path, cells))
    assert "engine step lag p99 200.0 ms" in flags(checks, "emulator keeps up")[0].evidence


def test_failed_cell_is_reported_and_the_rest_analysed(tmp_path):
    cells = matrix([MODEL], ["no-offload", "native-offload"], [8], 1)
    cells.append(SynthCell(scenario="native-offload", level=16, status="failed"))
    run, metrics, peaks, checks, _, _ = analyse(write_run(tmp_path, cells))
    failed = metrics[metrics["status"] == "failed"]
    assert list(failed["cell_id"]) == ["Qwen3-8B__native-offload__16__r0"]
    assert failed["requests_ok"].iloc[0] == 0
    assert {p.scenario for p in peaks} == {"no-offload", "native-offload"}
    assert "engine crashed" in flags(checks, "cells completed")[0].evidence


def test_no_memory_pressure_is_flagged(tmp_path):
    cells = matrix(
        [MODEL],
        ["no-offload", "native-offload"],
        [8],
        1,
        no_offload=dict(kv_usage=0.0048),
        native_offload=dict(kv_usage=0.0029),
    )
    _, _, _, checks, _, _ = analyse(write_run(tmp_path, cells))
    (flag,) = flags(checks, "memory pressure")
    assert flag.subject == MODEL
    assert "never exceeded 0.48 %" in flag.evidence


def test_tier_never_exercised_is_flagged(tmp_path):
    cells = matrix(
        [MODEL],
        ["no-offload", "native-offload", "lmcache-local"],
        [8],
        1,
        native_offload=dict(cpu_hit_tokens_per_request=0, offload_bytes_per_s=0.0),
        lmcache_local=dict(cpu_hit_tokens_per_request=16),
    )
    _, _, _, checks, findings, _ = analyse(write_run(tmp_path, cells))
    tier = [c for c in checks if c.name == "offload tier exercised"]
    assert {c.subject: c.status for c in tier} == {
        "Qwen3-8B / native-offload @ 8": CheckStatus.FLAG,
        "Qwen3-8B / lmcache-local @ 8": CheckStatus.OK,
    }
    assert any(
        "native-offload" in f.text and "'offload tier exercised' flagged" in f.text
        for f in findings
    )


def test_warm_cache_and_single_endpoint_router_are_flagged(tmp_path):
    cells = [
        SynthCell(scenario="no-offload", cache_protocol={"reset": False}),
        SynthCell(scenario="llm-d-redis", endpoints=1),
        SynthCell(scenario="llm-d-valkey", endpoints=2),
        SynthCell(scenario="lmcache-local", cached_tokens=200, reused_prefix_tokens=64),
    ]
    _, _, _, checks, _, _ = analyse(write_run(tmp_path, cells))
    cold = {c.subject: c.evidence for c in flags(checks, "cold start")}
    assert "no prefix-cache reset" in cold["Qwen3-8B__no-offload__8__r0"]
    assert "max excess 136 tokens" in cold["Qwen3-8B__lmcache-local__8__r0"]
    assert [c.subject for c in flags(checks, "routing can matter")] == [
        "Qwen3-8B__llm-d-redis__8__r0"
    ]


def test_redis_valkey_equivalence_only_when_interval_is_inside_margin(tmp_path):
    cells = matrix(
        [MODEL],
        ["no-offload", "lmcache-redis", "lmcache-valkey"],
        [8],
        4,
        lmcache_redis=dict(noise_sd=0.005),
        lmcache_valkey=dict(noise_sd=0.005),
        no_offload=dict(noise_sd=0.005),
    )
    _, _, _, _, findings, _ = analyse(write_run(tmp_path, cells))
    (finding,) = [f for f in findings if f.rule == "redis vs valkey"]
    assert "equivalent within +-5 %" in finding.text


def test_cpu_capacity_rule_reports_a_changed_verdict(tmp_path):
    cells = matrix([MODEL], ["no-offload"], [8], 3, no_offload=dict(noise_sd=0.01))
    for repeat in range(3):
        cells.append(
            SynthCell(
                scenario="native-offload",
                repeat=repeat,
                noise_sd=0.01,
                throughput_factor=0.8,
                swept_params={"num_cpu_blocks": 10000},
            )
        )
        cells.append(
            SynthCell(
                scenario="native-offload",
                repeat=repeat,
                noise_sd=0.01,
                throughput_factor=1.15,
                swept_params={"num_cpu_blocks": 20000},
            )
        )
    _, _, _, _, findings, _ = analyse(write_run(tmp_path, cells))
    (finding,) = [f for f in findings if f.rule == "cpu capacity"]
    assert (
        "num_cpu_blocks=10000: loss" in finding.text
        and "num_cpu_blocks=20000: gain" in finding.text
    )
    assert "the verdict changed with CPU capacity" in finding.text


def test_metrics_count_measure_phase_only_and_read_part_files(tmp_path):
    cells = [
        SynthCell(
            scenario="no-offload", part_files=True, n_requests=120, level=4, failed_requests=3
        )
    ]
    _, metrics, _, _, _, _ = analyse(write_run(tmp_path, cells))
    row = metrics.iloc[0]
    assert (
        row["requests_ok"] == 60 and row["requests_failed"] == 3
    )  # 120 * 4/(4+4); the warmup row is excluded
    assert row["output_tok_s"] == pytest.approx(60 * 100 / 60.0)


def test_counter_increase_survives_a_reset_and_histogram_quantile_interpolates():
    labels = json.dumps({"engine": "0"})
    rows = [(0.0, 5.0), (1.0, 10.0), (2.0, 15.0), (3.0, 2.0), (4.0, 6.0)]
    frame = pd.DataFrame(
        [
            {"ts_s": t, "source": "e0", "metric": "c_total", "labels": labels, "value": v}
            for t, v in rows
        ]
    )
    assert (
        counter_increase(frame, "c_total", (1.5, 4.0)) == 5.0 + 2.0 + 4.0
    )  # from the sample before the window
    buckets = [("0.1", 0, 10), ("0.2", 0, 30), ("+Inf", 0, 40)]
    hist = pd.DataFrame(
        [
            {
                "ts_s": ts,
                "source": "e0",
                "metric": "h_bucket",
                "labels": json.dumps({"le": le}),
                "value": v * ts,
            }
            for le, _, v in buckets
            for ts in (0.0, 1.0)
        ]
    )
    # 40 observations: 10 <= 0.1, 20 in (0.1, 0.2], 10 above. Median rank 20 -> 0.1 + 0.1 * (10/20).
    assert histogram_quantile(hist, "h", 0.5, (0.0, 1.0)) == pytest.approx(0.15)


def test_stats_t_interval_and_paired_delta_are_exact_for_known_inputs():
    interval = t_interval([10.0, 12.0, 14.0])
    assert interval.mean == 12.0
    assert interval.high - interval.mean == pytest.approx(4.302653 * 2.0 / 3**0.5, rel=1e-5)
    delta = paired_delta({0: 100.0, 1: 100.0}, {0: 110.0, 1: 110.0}, np.random.default_rng(1))
    assert delta.delta_pct == pytest.approx(10.0) and delta.low_pct == pytest.approx(10.0)


def test_missing_manifest_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="manifest.json"):
        load_run(tmp_path)
