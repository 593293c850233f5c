"""kvbench calibrate end to end against a running server (the emulated engine stands in for vLLM:
same API, same /metrics names), and its bad input."""

import sys

from kvbench.cli import main
from kvbench.emulator.engine.cost_model import CostParams
from kvbench.emulator.processes import ProcessSet, wait_healthy
from kvbench.emulator.stores import free_port
from kvbench.spec.catalogs import get_hardware


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
    # the emulated engine runs the H200 entry's default factors: the fit recovers its step time
    # (a factor equal to the default is left out of the profile)
    fitted_step_s = overrides.get("step_overhead_s", CostParams().step_overhead_s)
    assert 0.5e-3 < fitted_step_s < 3e-3


def test_calibrate_needs_exactly_one_source(tmp_path, capsys):
    assert main(["calibrate", "--out", str(tmp_path / "p.yaml")]) == 2
    assert "exactly one of --url, --spec or --probe" in capsys.readouterr().err
    assert (
        main(["calibrate", "--out", str(tmp_path / "p.yaml"), "--probe", str(tmp_path / "x")]) == 2
    )
    assert "no such file" in capsys.readouterr().err
