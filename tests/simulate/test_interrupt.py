"""Ctrl-C during a simulated run (cells in worker processes, or in the run's own process): exit 130,
finished cells kept, no process left behind; --resume finishes the run with the bytes an
uninterrupted run writes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from tests.simulate.test_simulated_target import SPEC, parquet_bytes

from kvbench.cli import main
from kvbench.targets.simulated_cells import init_worker


def statuses(run: Path) -> dict[str, str]:
    manifest = json.loads((run / "manifest.json").read_text())
    return {c["cell_id"]: c["status"] for c in manifest["cells"]}


def _kill_by_pid(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
            proc.wait(timeout=10)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass


@pytest.mark.parametrize("workers", [2, 1])
def test_ctrl_c_keeps_finished_cells_and_resume_finishes(tmp_path, workers):
    spec = {
        **SPEC,
        "scenarios": ["no-offload", "native-offload", "lmcache-redis"],
        "load": {**SPEC["load"], "levels": [2, 4, 8]},
        "target": {**SPEC["target"], "kind": "simulated", "workers": workers},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "kvbench.cli", "run", str(path), "--out", str(run)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    descendants: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if (run / "manifest.json").is_file() and "ok" in statuses(run).values():
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read()
        descendants = psutil.Process(process.pid).children(recursive=True)
        os.kill(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert "--resume" in err
        gone, alive = psutil.wait_procs(descendants, timeout=10)
        assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    finally:  # a failed check must not leave the run's workers and stores to later tests
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        _kill_by_pid(descendants)
    before = statuses(run)
    assert not (run / "logs" / ".router-decision-parts").exists()  # no half-written part left
    for log in run.glob("logs/*/router-decisions.jsonl"):
        assert all(json.loads(line) for line in log.read_text().splitlines())
    assert "ok" in before.values() and set(before.values()) - {"ok"}  # some kept, some not run

    assert main(["run", str(path), "--out", str(run), "--resume"]) == 0
    assert set(statuses(run).values()) == {"ok"} and len(statuses(run)) == 9
    fresh = tmp_path / "fresh"
    assert main(["run", str(path), "--out", str(fresh)]) == 0
    for cell_id in statuses(run):
        assert parquet_bytes(run, cell_id, "requests.parquet") == parquet_bytes(
            fresh, cell_id, "requests.parquet"
        )


def _absorbs_interrupts_then_returns_a_big_result(_: int) -> bytes:
    """What a cell did with asyncio.run's cancellation: finish, and hand back a large result."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except KeyboardInterrupt:
            break
    return b"x" * (1 << 20)  # more than a pipe holds: the write blocks until the parent reads


def test_pool_terminate_ends_a_worker_whose_cell_absorbs_interrupts():
    """Pool.terminate SIGTERMs its workers after its result reader has stopped. With the signals
    fork hands down (cli's SIGTERM-as-SIGINT) the cell absorbed the interrupt, the worker blocked
    writing its result and terminate never returned (checked: still joining after 30 s);
    init_worker's SIGTERM ends the worker whatever its cell catches."""
    import multiprocessing
    import threading

    from kvbench.termination import TerminationAsInterrupt

    with TerminationAsInterrupt():
        pool = multiprocessing.get_context("fork").Pool(1, initializer=init_worker)
        workers = [psutil.Process(p.pid) for p in pool._pool]  # their pids, to clean up only
        try:
            pool.apply_async(_absorbs_interrupts_then_returns_a_big_result, (0,))
            time.sleep(0.5)  # the task is running
            stopper = threading.Thread(target=pool.terminate, daemon=True)
            stopper.start()
            stopper.join(timeout=60)  # a hang guard, not a timing goal
            assert not stopper.is_alive()
            assert all(not w.is_running() or w.status() == psutil.STATUS_ZOMBIE for w in workers)
        finally:
            _kill_by_pid(workers)
