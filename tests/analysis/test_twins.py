"""A/A twin check, verdict downgrade and the TTFT hit/miss split: planted effects with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.synth import SynthCell, matrix, write_run
from kvbench.analysis.hits import shift_parts, shift_sentence
from kvbench.analysis.latency import select
from kvbench.analysis.load import load_run
from kvbench.analysis.twins import CHECK_NAME, twin_peaks
from kvbench.analysis.validity import CheckStatus
from kvbench.report.build import compile_report
from kvbench.report.markdown import render

MODEL = "Qwen/Qwen3-8B"
TWINS = ["llm-d-redis", "llm-d-valkey"]


def _report(tmp_path, cells):
    return compile_report(load_run(write_run(tmp_path, cells)))


def _aa(data):
    return [c for c in data.checks if c.name == CHECK_NAME]


def _latency(data, scenario, stat="ttft_mean"):
    (c,) = select(data.latency, scenario=scenario, stat=stat, basis="common")
    return c


def test_single_run_twins_with_a_planted_between_run_shift_raise_the_flag(tmp_path):
    # Same configuration, but the valkey twin's whole cell ran 30 % faster (a between-run shift).
    cells = [
        SynthCell(scenario="no-offload"),
        SynthCell(scenario="llm-d-redis"),
        SynthCell(scenario="llm-d-valkey", ttft_ms=35.0),
        SynthCell(scenario="lmcache-local", ttft_ms=35.0),
    ]
    data = _report(tmp_path, cells)
    (check,) = _aa(data)
    assert check.status == CheckStatus.FLAG and check.subject == MODEL
    assert check.evidence.startswith(
        "equivalent configurations differ significantly (llm-d-valkey vs llm-d-redis TTFT mean at level 8 -"
    )
    assert (
        "intervals understate run-to-run variance; treat single-run verdicts as indicative"
        in check.evidence
    )
    assert data.checks[0] is check  # first check in the report
    planted = _latency(data, "lmcache-local")
    assert planted.delta.downgraded and planted.verdict == "indicative lower"
    guidance = " ".join(g.text for g in data.guidance)
    assert "the A/A twin check failed" in guidance and "**lmcache-local**" not in guidance
    assert (
        "Indicative: llm-d-valkey lowers TTFT mean by 28." in guidance
    )  # the largest reduction, indicative only


def test_twins_that_agree_do_not_flag_and_say_so(tmp_path):
    cells = [
        SynthCell(scenario="no-offload"),
        SynthCell(scenario="llm-d-redis"),
        SynthCell(scenario="llm-d-valkey"),
    ]
    data = _report(tmp_path, cells)
    (check,) = _aa(data)
    assert check.status == CheckStatus.OK
    assert check.evidence.startswith(
        "equivalent configurations agree (no twin difference is significant: llm-d-valkey vs "
        "llm-d-redis peak output throughput "
    )
    assert "evidence that the intervals are not over-confident" in check.evidence
    assert not any(c.delta.downgraded for c in data.latency)
    assert "- **A/A twin check** (Qwen3-8B): ok: equivalent configurations agree" in render(data)


def test_paired_twins_that_differ_downgrade_a_paired_verdict(tmp_path):
    cells = matrix(
        [MODEL],
        ["no-offload", "native-offload", *TWINS],
        [8],
        3,
        native_offload=dict(ttft_ms=30.0),
        llm_d_valkey=dict(ttft_ms=35.0),
    )
    data = _report(tmp_path, cells)
    (check,) = _aa(data)
    assert check.status == CheckStatus.FLAG and "(paired-repeats)" in check.evidence
    c = _latency(data, "native-offload")
    assert c.delta.evidence == "paired-repeats" and c.verdict == "indicative lower"
    assert "downgraded because equivalent configurations differed" in c.delta.meaning()
    assert not any("**native-offload**" in g.text for g in data.guidance)
    assert any(
        "Indicative: native-offload lowers TTFT mean by" in g.text
        and "(A/A check failed)" in g.text
        for g in data.guidance
    )


def test_three_repeat_planted_effect_with_agreeing_twins_is_recommended(tmp_path):
    cells = matrix(
        [MODEL], ["no-offload", "native-offload", *TWINS], [8], 3, native_offload=dict(ttft_ms=35.0)
    )
    data = _report(tmp_path, cells)
    assert _aa(data)[0].status == CheckStatus.OK
    assert _latency(data, "native-offload").verdict == "lower"
    assert any("**native-offload** significantly lowers TTFT mean" in g.text for g in data.guidance)


def test_no_twins_is_a_skipped_check_and_labels_pair_by_suffix(tmp_path):
    data = _report(
        tmp_path,
        [
            SynthCell(scenario="no-offload"),
            SynthCell(scenario="lmcache-redis", swept_params={"x": 1}),
        ],
    )
    (check,) = _aa(data)
    assert check.status == CheckStatus.SKIP and check.subject == "run"
    cells = [
        SynthCell(scenario=s, swept_params=params)
        for s, params in (
            ("no-offload", {}),
            ("lmcache-redis", {"x": 1}),
            ("lmcache-valkey", {"x": 1}),
            ("lmcache-valkey", {"x": 2}),
        )
    ]
    run = load_run(write_run(tmp_path / "b", cells))
    peaks = compile_report(run).peaks
    assert [(a.scenario, b.scenario) for a, b in twin_peaks(peaks, run.kinds)] == [
        ("lmcache-redis+x=1", "lmcache-valkey+x=1")
    ]


def test_hit_miss_split_counts_and_explains_a_shift_by_more_hits(tmp_path):
    cells = [
        SynthCell(scenario="no-offload", hit_share=0.25, ttft_ms=50.0, hit_ttft_ms=20.0),
        SynthCell(scenario="lmcache-local", hit_share=0.75, ttft_ms=50.0, hit_ttft_ms=20.0),
    ]
    data = _report(tmp_path, cells)
    base, treat = (
        next(s for s in data.hit_splits if s.scenario == n) for n in ("no-offload", "lmcache-local")
    )
    # 267 ok requests per cell (400 * 8/12); hits = floor(267 * share)
    assert (base.hits, base.misses, base.unknown) == (66, 201, 0)
    assert (treat.hits, treat.misses) == (200, 67)
    assert base.hit_ttft_mean_ms == pytest.approx(
        20.0, rel=0.05
    ) and base.miss_ttft_mean_ms == pytest.approx(50.0, rel=0.05)
    parts = shift_parts(base, treat)
    overall = _latency(data, "lmcache-local")
    assert parts.total_ms == pytest.approx(
        overall.value_ms - overall.base_value_ms
    )  # exact decomposition
    assert parts.mix_ms == pytest.approx(
        (200 / 267 - 66 / 267) * (base.hit_ttft_mean_ms - base.miss_ttft_mean_ms)
    )
    assert abs(parts.mix_ms) > 10 * abs(parts.hit_speed_ms + parts.miss_speed_ms)
    assert "from more prefix hits (75% vs 25% of requests)" in shift_sentence(base, treat)
    assert any("Why: TTFT mean -" in f.text for f in data.findings)


def test_hit_miss_split_explains_a_shift_by_faster_hits(tmp_path):
    cells = [
        SynthCell(scenario="no-offload", hit_share=0.5, hit_ttft_ms=20.0),
        SynthCell(scenario="lmcache-local", hit_share=0.5, hit_ttft_ms=10.0),
    ]
    data = _report(tmp_path, cells)
    base, treat = (
        next(s for s in data.hit_splits if s.scenario == n) for n in ("no-offload", "lmcache-local")
    )
    parts = shift_parts(base, treat)
    assert parts.mix_ms == pytest.approx(0.0)  # same hit count on both sides
    assert parts.hit_speed_ms == pytest.approx(
        0.5 * (treat.hit_ttft_mean_ms - base.hit_ttft_mean_ms), rel=0.01
    )
    assert -6 < parts.hit_speed_ms < -4
    assert "from faster hits (" in shift_sentence(base, treat)


def test_no_cached_tokens_means_unknown_and_no_explanation(tmp_path):
    data = _report(
        tmp_path,
        [
            SynthCell(scenario="no-offload", cached_tokens=None),
            SynthCell(scenario="lmcache-local", cached_tokens=None),
        ],
    )
    assert all(s.hits == 0 and s.misses == 0 and s.unknown == 267 for s in data.hit_splits)
    assert shift_parts(*data.hit_splits) is None
    assert np.isnan(data.hit_splits[0].hit_share)


def test_all_hits_on_one_side_gives_shares_without_a_split(tmp_path):
    data = _report(
        tmp_path,
        [
            SynthCell(scenario="no-offload", hit_share=0.25),
            SynthCell(scenario="lmcache-local", hit_share=1.0),
        ],
    )
    base, treat = data.hit_splits
    assert (treat.hits, treat.misses) == (267, 0) and shift_parts(base, treat) is None
    assert shift_sentence(base, treat).startswith(
        "prefix hits 100% vs 25% of requests (TTFT mean hit "
    )
    assert "miss n/a ms vs hit" in shift_sentence(base, treat)
    assert "one side has no misses, so the shift is not split into parts" in shift_sentence(
        base, treat
    )
