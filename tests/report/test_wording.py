"""Every sentence the report writes agrees with the numbers it states: signs, counts, names."""

from __future__ import annotations

import re

from analysis.synth import SynthCell, matrix, write_run
from kvbench.analysis.phrases import change_phrase, count_phrase, join_names
from kvbench.analysis.stats import EVIDENCE_PAIRED, Delta
from kvbench.analysis.validity import Check, CheckStatus
from kvbench.experiment.estimate import fmt_duration
from kvbench.experiment.run_progress import RunProgress, live_text
from kvbench.loadgen.plan import ProgressUpdate
from kvbench.report.build import build_report
from kvbench.report.validity_section import check_summary

AA = "A/A twins agree"


def _delta(pct: float, low: float, high: float) -> Delta:
    return Delta(pct, low, high, "paired bootstrap", 3, evidence=EVIDENCE_PAIRED)


def test_change_phrase_puts_the_size_after_the_verb_and_the_sign_in_the_interval():
    assert change_phrase(_delta(-40.2, -50.0, -30.0), "TTFT mean") == (
        "lowers TTFT mean by 40.2 % (-40.2% [-50.0, -30.0])"
    )
    assert change_phrase(_delta(12.5, 3.0, 20.0), "throughput").startswith(
        "raises throughput by 12.5 %"
    )
    assert change_phrase(_delta(0.0, -1.0, 1.0), "x").startswith("leaves x unchanged")


def test_counts_agree_with_their_nouns():
    assert count_phrase(1, "repeat") == "1 repeat" and count_phrase(3, "repeat") == "3 repeats"
    assert join_names(["a", "b", "c"]) == "a, b and c" and join_names(["a"]) == "a"
    assert fmt_duration(45) == "45 s" and fmt_duration(200) == "3 min 20 s"
    assert fmt_duration(7.5 * 3600) == "7 h 30 min"


def test_a_run_level_check_is_stated_with_its_evidence_not_as_a_cell_count():
    cells = {"c1", "c2"}
    run_level = check_summary(
        [Check("cells completed", CheckStatus.OK, "run", "all 7 cells ok")], cells
    )
    assert run_level == "cells completed (run): ok: all 7 cells ok"
    per_cell = check_summary(
        [
            Check("client keeps up", CheckStatus.FLAG, "c1", "x"),
            Check("client keeps up", CheckStatus.OK, "c2", "y"),
        ],
        cells,
    )
    assert per_cell == "client keeps up: 2 cells checked: 1 FLAG, 1 ok"


def _report_text(tmp_path, cells) -> str:
    report = build_report(write_run(tmp_path, cells), ["md"])
    return (report / "REPORT.md").read_text()


def test_no_sentence_says_no_problem_next_to_a_flag(tmp_path):
    # twins with a planted difference: the A/A check flags, and nothing else does
    cells = matrix(
        ["Qwen/Qwen3-8B"],
        ["no-offload", "llm-d-redis", "llm-d-valkey"],
        [8],
        3,
        no_offload=dict(noise_sd=0.005),
        llm_d_redis=dict(noise_sd=0.005, endpoints=2),
        llm_d_valkey=dict(noise_sd=0.005, throughput_factor=1.3, endpoints=2),
    )
    text = _report_text(tmp_path, cells)
    validity = text[text.index("## Validity checks") : text.index("## Peak throughput")]
    assert "**A/A twin check** (Qwen3-8B): **FLAG**" in validity
    assert "No check flagged a problem." not in text
    assert "No check other than the A/A twin check flagged a problem." in validity
    assert "No validity check flagged a problem." not in text


def test_no_double_negative_or_signed_size_after_a_verb(tmp_path):
    cells = matrix(
        ["Qwen/Qwen3-8B"],
        ["no-offload", "native-offload"],
        [8],
        3,
        no_offload=dict(noise_sd=0.005),
        native_offload=dict(noise_sd=0.005, throughput_factor=0.7, ttft_ms=30.0),
    )
    text = _report_text(tmp_path, cells)
    assert not re.search(r"\b(lowers|raises|lowered|raised|lower|raise) [^(\n]*? by [+-]\d", text)
    assert (
        "lowers peak output throughput by 29." in text
    )  # the planted -30 %, unsigned after the verb
    assert "(**loss**" not in text and "| **loss** |" in text


def test_a_tie_for_the_highest_peak_is_called_a_tie(tmp_path):
    cells = [
        SynthCell(scenario="no-offload"),
        SynthCell(scenario="llm-d-redis"),
        SynthCell(scenario="llm-d-valkey"),
    ]
    text = _report_text(tmp_path, cells)
    assert "no-offload, llm-d-redis and llm-d-valkey tie for the highest peak" in text
    assert "the baseline no-offload has the highest peak" not in text


def test_engines_are_named_engine_n_with_their_addresses_in_the_cells_table(tmp_path):
    cells = [
        SynthCell(scenario="no-offload", endpoints=2),
        SynthCell(scenario="llm-d-redis", endpoints=2),
    ]
    text = _report_text(tmp_path, cells)
    routing = text[text.index("## Routing") : text.index("## Server metrics")]
    assert "| engine-0 |" in routing and "| engine-1 |" in routing


def test_progress_lines_count_cells_and_give_an_eta():
    printed: list[str] = []

    class FakeConsole:
        def print(self, text, **_kw):
            printed.append(text)

    now = [0.0]
    progress = RunProgress(FakeConsole(), total_cells=4, already_done=1, clock=lambda: now[0])
    assert progress.eta_s() is None
    progress._cell_start = 0.0
    progress.position = 2
    now[0] = 30.0
    progress.cell_finished(None)
    assert progress.eta_s() == 60.0 and printed[-1].endswith("2 cells left, ETA 1 min 00 s")
    assert live_text(ProgressUpdate("c", 10, 9, 1, 2, 4.5, output_tokens=900)) == (
        "4 s: 10 done (2.00 req/s, 200 tok/s), 1 errors, 2 in flight"
    )
