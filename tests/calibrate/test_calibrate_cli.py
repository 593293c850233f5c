"""kvbench calibrate end to end against a running server (the emulated engine stands in for vLLM:
same API, same /metrics names), and its bad input."""

import sys

import pytest

from kvbench.calibrate.fit import _decode_work, decode_points, read_probe
from kvbench.cli import main
from kvbench.emulator.engine.build import cost_params_for
from kvbench.emulator.engine.cost_model import CostModel
from kvbench.emulator.processes import ProcessSet, wait_healthy
from kvbench.emulator.stores import free_port
from kvbench.spec.catalogs import get_hardware, get_model


def test_calibrate_probes_a_server_and_writes_a_profile_the_emulator_accepts(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable,
        "-m",
        "kvbench.cli",
        "emulate",
        "serve",
        "Qwen/Qwen3-0.6B",
        "--hardware",
        "H200",
        "--port",
        str(port),
        "--enable-prompt-tokens-details",
        "--num-gpu-blocks-override",
        "4096",
    ]
    processes = ProcessSet()
    server = processes.spawn(
        "engine-0", argv, {"PATH": "/usr/bin:/bin"}, tmp_path / "e.log", f"{url}/health"
    )
    try:
        wait_healthy([server], 60)
        out = tmp_path / "prof.yaml"
        assert (
            main(["calibrate", "--url", url, "--out", str(out), "--quick", "--name", "mine"]) == 0
        )
    finally:
        processes.stop_all()
    probe = tmp_path / "prof-probe-Qwen3-0.6B-no-offload.jsonl"
    assert probe.is_file() and probe.read_text().count("\n") > 5
    profile = get_hardware(str(out))
    assert profile.name == "mine"
    overrides = profile.cost_overrides
    assert overrides["cpu_overlap"] is True
    # the emulated engine runs the H200 entry's default factors: the fitted profile gives back the
    # decode steps it measured (two points of a quick probe do not pin each CPU term apart, their
    # sum they do)
    fitted = CostModel(get_model("Qwen/Qwen3-0.6B"), profile, 1, cost_params_for(profile))
    points = decode_points(read_probe(probe))
    assert len(points) == 2
    for point in points:
        predicted_s = fitted.step_duration_s(_decode_work(point.batch, point.context_tokens))
        assert predicted_s == pytest.approx(point.itl_s, rel=0.15)
    # and the replayed request path is in the profile: a lag per stream replaces the output-rate one
    assert "frontend_lag_s_per_output_tok_s" not in overrides
    assert "replayed" in profile.source


def test_calibrate_needs_exactly_one_source(tmp_path, capsys):
    assert main(["calibrate", "--out", str(tmp_path / "p.yaml")]) == 2
    assert "exactly one of --url, --spec or --probe" in capsys.readouterr().err
    assert (
        main(["calibrate", "--out", str(tmp_path / "p.yaml"), "--probe", str(tmp_path / "x")]) == 2
    )
    assert "no such file" in capsys.readouterr().err
