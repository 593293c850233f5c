import json
from pathlib import Path

import pandas as pd
import pytest

from kvbench.cli import main
from kvbench.errors import UserError
from kvbench.results.guidellm_import import import_guidellm

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "guidellm-0.8.1-result-sample.json"


def test_sample_becomes_one_cell_with_our_fields(tmp_path):
    run = import_guidellm([SAMPLE], tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["system_under_test"]["kind"] == "guidellm-import"
    assert [c["cell_id"] for c in manifest["cells"]] == ["mock-model__guidellm__2__r0"]
    cell_dir = run / "cells" / "mock-model__guidellm__2__r0"
    frame = pd.read_parquet(cell_dir / "requests.parquet")
    raw = json.loads(SAMPLE.read_text())["benchmarks"][0]["requests"]["successful"]
    assert len(frame) == len(raw) == 6
    row = frame.set_index("request_id").loc[raw[0]["request_id"]]
    assert row["ttft_ms"] == pytest.approx(raw[0]["time_to_first_token_ms"])
    assert row["e2e_ms"] == pytest.approx(raw[0]["request_latency"] * 1000)
    # our TPOT excludes the first token: (e2e - ttft) / (n - 1), not GuideLLM's number
    ours = (raw[0]["request_latency"] * 1000 - raw[0]["time_to_first_token_ms"]) / 127
    assert row["tpot_ms"] == pytest.approx(ours)
    assert row["tpot_ms"] != pytest.approx(raw[0]["time_per_output_token_ms"])
    assert row["end_s"] - row["sent_s"] == pytest.approx(raw[0]["request_latency"], abs=1e-6)
    assert row["level"] == 2.0 and row["status"] == "ok"
    assert pd.isna(row["cached_tokens"])  # GuideLLM reported none: stays null, never 0
    cell = json.loads((cell_dir / "cell.json").read_text())
    assert cell["status"] == "ok" and cell["summary"]["requests_ok"] == 6


def test_two_files_of_the_same_level_become_repeats(tmp_path):
    run = import_guidellm([SAMPLE, SAMPLE], tmp_path / "run")
    cells = [c["cell_id"] for c in json.loads((run / "manifest.json").read_text())["cells"]]
    assert cells == ["mock-model__guidellm__2__r0", "mock-model__guidellm__2__r1"]


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{broken", "not JSON"),
        ('{"results": []}', "not a GuideLLM result"),
        ('{"benchmarks": [{"x": 1}]}', "benchmarks[0]"),
    ],
)
def test_bad_files_are_one_line_user_errors(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError) as err:
        import_guidellm([path], tmp_path / "run")
    assert expected in str(err.value) and str(path) in str(err.value)


def test_cli_exit_code_2_on_a_bad_file(tmp_path, capsys):
    assert (
        main(["import", "guidellm", str(tmp_path / "missing.json"), "--out", str(tmp_path / "r")])
        == 2
    )
    assert "missing.json" in capsys.readouterr().err


def test_scenario_labels_make_a_comparative_run_with_no_offload_as_baseline(tmp_path):
    run = import_guidellm([f"lmcache-local={SAMPLE}", f"no-offload={SAMPLE}"], tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    assert [(c["scenario"], c["repeat"]) for c in manifest["cells"]] == [
        ("lmcache-local", 0),
        ("no-offload", 0),
    ]
    assert manifest["baseline_scenario"] == "no-offload"
    assert (run / "cells" / "mock-model__no-offload__2__r0" / "requests.parquet").exists()


def test_a_label_naming_a_missing_file_names_the_file(tmp_path):
    with pytest.raises(UserError, match="nope.json: no such file"):
        import_guidellm([f"no-offload={tmp_path / 'nope.json'}"], tmp_path / "run")
