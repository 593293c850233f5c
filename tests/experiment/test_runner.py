import json
import signal
import socket
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kv_endpoint import KvEndpoint  # noqa: E402

from kvbench.cli import main  # noqa: E402
from kvbench.errors import UserError  # noqa: E402
from kvbench.experiment.cell_run import RunnerHooks  # noqa: E402
from kvbench.experiment.runner import run_experiment_cli  # noqa: E402

SPEC = """
name: t
models: [tiny]
scenarios: [no-offload, native-offload]
target: {{kind: endpoint, url: "{url}", metrics_urls: ["{url}/metrics"]}}
workload: {{kind: multi_turn_shared_prefix, prefix_tokens: 64, prefix_count: 2, turns: 2, prompt_tokens: 8,
           output_tokens: 4, conversations: 4}}
load: {{strategy: concurrent, levels: [1, 2], requests_per_level: 8}}
collect: {{interval_s: 0.2}}
{extra}
"""


def write_spec(tmp_path, url, extra=""):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(url=url, extra=extra))
    return path


def manifest(run):
    return json.loads((run / "manifest.json").read_text())


def cell(run, cell_id):
    return json.loads((run / "cells" / cell_id / "cell.json").read_text())


def requests(run, cell_id):
    return pd.read_parquet(run / "cells" / cell_id / "requests.parquet")


def test_full_matrix_runs_with_cold_cells_and_paired_workloads(tmp_path):
    run = tmp_path / "run"
    with KvEndpoint() as server:
        assert run_experiment_cli(write_spec(tmp_path, server.url, "repeats: 2"), run) == 0
    cells = manifest(run)["cells"]
    assert len(cells) == 8 and all(c["status"] == "ok" for c in cells)
    info = cell(run, "tiny__native-offload__2__r1")
    assert info["summary"]["requests_ok"] == 8
    verify = info["cache_protocol"]["verify"]
    assert (
        verify["expected"] == "cold"
        and verify["consistent"] is True
        and verify["first_use_misses"] == 2
    )
    assert info["cache_protocol"]["reset"]["components"][server.url]["reset"] is True

    # every scenario of a repeat sends the same conversations; repeats differ
    def prompts(cid):
        return sorted(requests(run, cid)["prompt_tokens"])

    def convs(cid):
        return list(requests(run, cid).sort_values("sent_s")["conversation_id"])

    assert convs("tiny__no-offload__1__r0") == convs("tiny__native-offload__1__r0")
    assert convs("tiny__no-offload__1__r0") != convs("tiny__no-offload__1__r1")
    assert prompts("tiny__no-offload__2__r0") == prompts("tiny__native-offload__2__r0")
    metrics = pd.read_parquet(run / "cells" / "tiny__no-offload__1__r0" / "server_metrics.parquet")
    assert set(metrics["metric"]) == {
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_queries_total",
    }
    system = pd.read_parquet(run / "cells" / "tiny__no-offload__1__r0" / "system_metrics.parquet")
    assert {"host", "client"} <= set(system["source"])
    assert manifest(run)["system_under_test"]["kind"] == "endpoint" and manifest(run)["finished_at"]


def test_failed_cell_is_recorded_and_the_matrix_goes_on(tmp_path):
    run = tmp_path / "run"
    with KvEndpoint() as server:

        def before(plan):
            server.fail_all = plan.cell_id == "tiny__no-offload__2__r0"

        code = run_experiment_cli(
            write_spec(tmp_path, server.url), run, hooks=RunnerHooks(before_cell=before)
        )
    assert code == 1
    statuses = {c["cell_id"]: c["status"] for c in manifest(run)["cells"]}
    assert statuses == {
        "tiny__no-offload__1__r0": "ok",
        "tiny__no-offload__2__r0": "failed",
        "tiny__native-offload__1__r0": "ok",
        "tiny__native-offload__2__r0": "ok",
    }
    failed = cell(run, "tiny__no-offload__2__r0")
    assert "no request succeeded" in failed["error"] and "HTTP 500" in failed["error"]


def test_unreachable_endpoint_fails_every_cell_fast(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = tmp_path / "run"
    assert run_experiment_cli(write_spec(tmp_path, f"http://127.0.0.1:{port}"), run) == 1
    cells = manifest(run)["cells"]
    assert [c["status"] for c in cells] == ["failed"] * 4
    assert "unreachable" in cell(run, cells[0]["cell_id"])["error"]


@pytest.fixture
def terminal_sigint():
    """SIGINT handled as a terminal's Ctrl-C is (Python's handler), also when this test process was
    started as a background job, which inherits SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_then_resume_finishes_without_duplicates(tmp_path, terminal_sigint):
    run = tmp_path / "run"
    seen = {"n": 0}

    def interrupt_second_cell(record):
        if record.cell_id == "tiny__no-offload__2__r0":
            seen["n"] += 1
            if seen["n"] == 3:
                signal.raise_signal(signal.SIGINT)

    with KvEndpoint() as server:
        spec = write_spec(tmp_path, server.url)
        assert (
            run_experiment_cli(spec, run, hooks=RunnerHooks(on_record=interrupt_second_cell)) == 130
        )
        statuses = {c["cell_id"]: c["status"] for c in manifest(run)["cells"]}
        assert statuses["tiny__no-offload__1__r0"] == "ok"
        assert statuses["tiny__no-offload__2__r0"] == "interrupted"
        assert statuses["tiny__native-offload__1__r0"] == "pending"
        first_parts = sorted(
            (run / "cells" / "tiny__no-offload__1__r0" / "requests.parquet").iterdir()
        )
        first_mtimes = [p.stat().st_mtime_ns for p in first_parts]
        assert run_experiment_cli(spec, run, resume=True) == 0
    assert all(c["status"] == "ok" for c in manifest(run)["cells"])
    assert [
        p.stat().st_mtime_ns for p in first_parts
    ] == first_mtimes  # the finished cell was not rerun
    redone = requests(run, "tiny__no-offload__2__r0")
    assert len(redone[redone["phase"] == "measure"]) == 8 and redone["request_id"].is_unique


def test_prime_makes_a_warm_cell(tmp_path):
    run = tmp_path / "run"
    with KvEndpoint() as server:
        spec = write_spec(tmp_path, server.url, "cache: {reset: true, prime: true}")
        assert run_experiment_cli(spec, run, only=["level=1", "scenario=no-offload"]) == 0
    info = cell(run, "tiny__no-offload__1__r0")
    assert info["cache_protocol"]["primed_prefixes"] == 2
    assert info["cache_protocol"]["verify"]["expected"] == "warm"
    assert info["cache_protocol"]["verify"]["consistent"] is True
    frame = requests(run, "tiny__no-offload__1__r0")
    assert (frame["phase"] == "prime").sum() == 2 and (frame["phase"] == "measure").sum() == 8


def test_no_reset_support_means_unknown_cache_state(tmp_path):
    run = tmp_path / "run"
    with KvEndpoint(reset_supported=False) as server:
        assert run_experiment_cli(write_spec(tmp_path, server.url), run, only=["level=1"]) == 0
    second = cell(run, "tiny__native-offload__1__r0")["cache_protocol"]["verify"]
    assert second["expected"] == "unknown" and second["inherited_warm_prefixes"] == 2


def test_only_filters_and_bad_keys(tmp_path):
    run = tmp_path / "run"
    with KvEndpoint() as server:
        spec = write_spec(tmp_path, server.url)
        with pytest.raises(UserError, match="--only 'colour=red'"):
            run_experiment_cli(spec, run, only=["colour=red"])
        assert run_experiment_cli(spec, run, only=["level=2.0", "scenario=native-offload"]) == 0
    assert [c["cell_id"] for c in manifest(run)["cells"]] == ["tiny__native-offload__2__r0"]


@pytest.mark.parametrize(
    "mutation, expected",
    [
        (("name: t", "name: [t"), "invalid YAML"),
        (("kind: multi_turn_shared_prefix", "kind: nonsense"), "workload"),
        (("turns: 2", "turns: 0"), "workload.turns: Input should be greater than 0"),
        (("prefix_count: 2", "prefix_count: -1"), "workload.prefix_count"),
        (("name: t", "name: t\nwat: 1"), "wat"),
    ],
)
def test_bad_specs_exit_2_with_one_line(tmp_path, capsys, mutation, expected):
    path = write_spec(tmp_path, "http://127.0.0.1:1")
    path.write_text(path.read_text().replace(*mutation))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and str(path) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_prompts_over_max_model_len_are_rejected_before_load(tmp_path, capsys):
    with KvEndpoint(max_model_len=64) as server:
        path = write_spec(tmp_path, server.url)
        assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
        assert server.requests == 0
    err = capsys.readouterr().err
    assert "needs 88 tokens" in err and "max_model_len 64" in err  # 64 + 2 x (8 + 4)


def test_sweep_runs_synchronous_throughput_then_rates_between(tmp_path):
    run = tmp_path / "run"
    with KvEndpoint() as server:
        spec = write_spec(tmp_path, server.url)
        spec.write_text(
            spec.read_text().replace(
                "strategy: concurrent, levels: [1, 2]", "strategy: sweep, sweep_size: 3"
            )
        )
        assert run_experiment_cli(spec, run, only=["scenario=no-offload"]) == 0
    sync, thr, rate = (cell(run, f"tiny__no-offload__{k}__r0") for k in (1, 2, 3))
    assert (
        sync["level_plan"]["strategy"],
        thr["level_plan"]["strategy"],
        rate["level_plan"]["strategy"],
    ) == ("synchronous", "throughput", "constant")
    # GuideLLM: linspace(sync, throughput, sweep_size - 1)[1:] -> with sweep_size 3 the rate is the throughput's
    assert rate["level_plan"]["level"] == pytest.approx(thr["summary"]["request_rate_rps"])


def test_cli_exit_code_1_when_a_cell_failed(tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = write_spec(tmp_path, f"http://127.0.0.1:{port}")
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--only", "level=1"]) == 1
    assert "unreachable" in capsys.readouterr().err
