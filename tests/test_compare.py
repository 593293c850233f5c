"""kvbench compare: matched cells, differences in the right units, offload gain, bad input."""

import pytest

from kvbench.cli import main
from kvbench.compare import SideCell, compare_cells, markdown
from kvbench.results.summary import CellSummary


def side(system: str, rates: dict[str, float], cached: float = 0.5) -> dict:
    cells = {}
    for scenario, rate in rates.items():
        key = ("Qwen/Qwen3-0.6B", scenario, 16.0, 0)
        summary = CellSummary(
            output_tokens_per_s=rate,
            ttft_mean_ms=100.0,
            ttft_p50_ms=90.0,
            cached_prompt_fraction=cached,
        )
        cells[key] = SideCell(key, summary, system)
    return cells


def test_rates_compare_relatively_fractions_and_gains_in_points():
    real = side("vllm", {"no-offload": 1000.0, "native-offload": 900.0}, cached=0.65)
    emulated = side(
        "emulated",
        {"no-offload": 1030.0, "native-offload": 1030.0, "lmcache-local": 5.0},
        cached=0.66,
    )
    rows = compare_cells(real, emulated)
    by = {(r.key[1], r.metric): r for r in rows}
    assert ("lmcache-local", "output_tokens_per_s") not in by  # only cells both runs have
    assert by[("no-offload", "output_tokens_per_s")].difference == pytest.approx(0.03)
    assert by[("no-offload", "cached_prompt_fraction")].difference == pytest.approx(1.0)
    gain = by[("native-offload", "offload_gain")]
    assert (gain.a, gain.b) == (pytest.approx(-0.1), pytest.approx(0.0))
    assert gain.difference == pytest.approx(10.0)  # points
    assert by[("no-offload", "tpot_p50_ms")].difference is None  # not measured on either side
    table = markdown(rows, "vllm", "emulated")
    assert "| Qwen3-0.6B | native-offload | 16 | offload gain | -10.0% | 0.0% | +10.0 pt |" in table
    assert "| Qwen3-0.6B | no-offload | 16 | tok/s | 1,000.0 | 1,030.0 | +3.0% |" in table


def test_compare_of_a_folder_that_is_no_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a kvbench run directory" in err and "Traceback" not in err
