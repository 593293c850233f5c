"""Fuzz: random GuideLLM result files never crash `kvbench import guidellm`. Each one imports or is
one line naming the file, exit 2; a failed import leaves no run directory behind."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import VALUES, mutated

from kvbench.cli import main

SAMPLE_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "guidellm-0.8.1-result-sample.json"
SAMPLE = json.loads(SAMPLE_PATH.read_text())
# The parts the import reads: mutations land there (a mutation of the 2,000 ignored fields tests
# nothing). The whole report is still what is written.
BENCH = SAMPLE["benchmarks"][0]
FOCUSED = {
    "metadata": SAMPLE["metadata"],
    "benchmarks": [
        {
            "config": {"id_": BENCH["config"]["id_"], "strategy": BENCH["config"]["strategy"]},
            "requests": {
                "successful": BENCH["requests"]["successful"][:2],
                "errored": [],
                "incomplete": BENCH["requests"]["successful"][2:3],
            },
            **{
                k: BENCH[k]
                for k in ("start_time", "end_time", "warmup_duration", "cooldown_duration")
            },
        }
    ],
}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # capsys: read (and so emptied) in every example
    ],
)


def _import(tmp: Path, content: bytes, capsys) -> int:
    source = tmp / "result.json"
    source.write_bytes(content)
    out = tmp / "run"
    code = main(["import", "guidellm", str(source), "--out", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 2), err
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "result.json" in err, err
        assert sorted(p.name for p in tmp.iterdir()) == ["result.json"]  # nothing half-made
    else:
        assert (out / "manifest.json").is_file()
    return code


@FUZZ
@given(mutated(FOCUSED, max_mutations=2))
def test_mutated_results_import_or_fail_in_one_line(tmp_path_factory, capsys, data):
    text = json.dumps(data, allow_nan=True).encode("utf-8", "surrogatepass")
    _import(tmp_path_factory.mktemp("g"), text, capsys)


@settings(FUZZ, max_examples=60)
@given(VALUES)
def test_arbitrary_json_fails_in_one_line(tmp_path_factory, capsys, data):
    text = json.dumps(data, allow_nan=True).encode("utf-8", "surrogatepass")
    assert _import(tmp_path_factory.mktemp("j"), text, capsys) == 2


@settings(FUZZ, max_examples=40)
@given(st.binary(max_size=200))
def test_random_bytes_fail_in_one_line(tmp_path_factory, capsys, content):
    assert _import(tmp_path_factory.mktemp("b"), content, capsys) == 2
