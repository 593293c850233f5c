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
        ('{"benchmarks": [{"x": 1}]}', "benchmarks.0"),
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


def _sample() -> dict:
    return json.loads(SAMPLE.read_text())


def _mutated(mutate) -> dict:
    data = _sample()
    mutate(data)
    return data


def _bench(data: dict) -> dict:
    return data["benchmarks"][0]


# Well-formed JSON of the wrong structure: each must be one line naming the file, exit 2, and leave
# nothing behind (the retry with a good file must then succeed on the same --out).
WRONG_STRUCTURES = {
    "no benchmarks": {"benchmarks": []},
    "benchmarks not a list": {"benchmarks": {"a": 1}},
    "strategy without streams": _mutated(lambda d: _bench(d)["config"]["strategy"].pop("streams")),
    "strategy of unknown type": _mutated(
        lambda d: _bench(d)["config"]["strategy"].update(type_="warp")
    ),
    "requests not a mapping": _mutated(lambda d: _bench(d).update(requests=[1, 2])),
    "start_time a string": _mutated(lambda d: _bench(d).update(start_time="yesterday")),
    "successful not a list": _mutated(lambda d: _bench(d)["requests"].update(successful=5)),
    "a request not a mapping": _mutated(lambda d: _bench(d)["requests"].update(successful=[None])),
    "a negative token count": _mutated(
        lambda d: _bench(d)["requests"]["successful"][0].update(output_tokens=-3)
    ),
    "ends before it starts": _mutated(lambda d: _bench(d).update(end_time=0.0)),
    "a top-level list": [1, 2, 3],
}


@pytest.mark.parametrize("case", sorted(WRONG_STRUCTURES))
def test_wrong_structure_is_one_line_exit_2_and_leaves_no_run_dir(tmp_path, capsys, case):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(WRONG_STRUCTURES[case]))
    out = tmp_path / "run"
    code = main(["import", "guidellm", str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "bad.json" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]  # nothing half-made
    assert main(["import", "guidellm", str(SAMPLE), "--out", str(out)]) == 0  # the retry works


def test_a_failure_while_writing_leaves_no_run_dir(tmp_path, monkeypatch):
    import kvbench.results.guidellm_import as module

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "_import_benchmark", broken)
    with pytest.raises(OSError):
        import_guidellm([SAMPLE], tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_out_naming_a_file_or_a_full_directory_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert main(["import", "guidellm", str(SAMPLE), "--out", str(a_file)]) == 1
    assert "is a file" in capsys.readouterr().err
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("x")
    assert main(["import", "guidellm", str(SAMPLE), "--out", str(full)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_incomplete_requests_are_not_errors(tmp_path):
    data = _sample()
    requests = _bench(data)["requests"]
    cut = requests["successful"].pop()
    cut["output_tokens"] = 7
    requests["incomplete"] = [cut]
    path = tmp_path / "with-incomplete.json"
    path.write_text(json.dumps(data))
    run = import_guidellm([path], tmp_path / "run")
    cell_dir = run / "cells" / "mock-model__guidellm__2__r0"
    cell = json.loads((cell_dir / "cell.json").read_text())
    assert cell["summary"]["requests_ok"] == 5
    assert cell["summary"]["requests_failed"] == 0
    assert cell["validity"]["guidellm_incomplete_requests"] == 1
    frame = pd.read_parquet(cell_dir / "requests.parquet")
    kept = frame[frame["status"] == "cancelled"]
    assert len(kept) == 1 and kept["phase"].tolist() == ["cooldown"]  # kept, outside the stats


def test_the_imported_run_says_what_it_was(tmp_path):
    run = import_guidellm([SAMPLE], tmp_path / "run")
    sut = json.loads((run / "manifest.json").read_text())["system_under_test"]
    assert sut["details"]["imported_from"] == "guidellm"
    assert sut["details"]["target"] == "http://127.0.0.1:18000"  # from v0.8's config.spec.backend
    assert "imported from GuideLLM 0.8.1" in sut["description"]
    assert "http://127.0.0.1:18000" in sut["description"]
    assert "api_key" not in json.dumps(sut)


def test_the_report_of_an_import_says_it_was_imported(tmp_path):
    from kvbench.report.build import build_report

    run = import_guidellm([SAMPLE], tmp_path / "run")
    text = (build_report(run, ["md"]) / "REPORT.md").read_text()
    assert "imported from GuideLLM" in text and "http://127.0.0.1:18000" in text
    assert "measured on the system described" not in text
