"""Run-directory safety and environment failures, through the real CLI.

- one process per --out: a second one is refused with one line naming the holder's pid;
- SIGTERM is handled like SIGINT: exit 143, the running cell interrupted with its rows so far
  flushed, --resume finishes;
- environment failures (a full disk, --out naming a file, an unreachable k8s API server) are one
  line and exit 1, results so far stay valid and --resume finishes.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kv_endpoint import KvEndpoint  # noqa: E402

from kvbench.cli import main  # noqa: E402
from kvbench.results.run_lock import LOCK_FILE, RunLock  # noqa: E402

SPEC = """
name: t
models: [tiny]
scenarios: [no-offload, native-offload]
target: {{kind: endpoint, url: "{url}"}}
workload: {{kind: multi_turn_shared_prefix, prefix_tokens: 32, prefix_count: 2, turns: 2,
           prompt_tokens: 8, output_tokens: 4, conversations: 4}}
load: {{strategy: concurrent, levels: [1, 2], {stop}}}
collect: {{interval_s: 0.2, system_metrics: false}}
"""


def write_spec(tmp_path: Path, url: str, stop: str = "requests_per_level: 8") -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(url=url, stop=stop))
    return path


def statuses(run: Path) -> dict[str, str]:
    cells = json.loads((run / "manifest.json").read_text())["cells"]
    return {c["cell_id"]: c["status"] for c in cells}


def one_line(err: str) -> str:
    """The one error line (progress lines of cells that ran before it may precede it)."""
    lines = [line for line in err.strip().splitlines() if line.startswith("kvbench:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_second_process_on_the_same_out_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    with KvEndpoint() as server, RunLock(run):  # this process holds the run directory
        code = main(["run", str(write_spec(tmp_path, server.url)), "--out", str(run)])
        line = one_line(capsys.readouterr().err)
    assert code == 2
    assert f"pid {os.getpid()}" in line and "--out" in line
    assert not (run / "manifest.json").exists()  # refused before it touched anything


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("999999\n")  # the file of a killed run; nobody holds the lock
    with KvEndpoint() as server:
        assert main(["run", str(write_spec(tmp_path, server.url)), "--out", str(run)]) == 0


def _wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _running(run: Path) -> bool:
    try:
        return "running" in statuses(run).values()
    except (OSError, ValueError):
        return False


def test_sigterm_is_handled_like_sigint_then_resume_finishes(tmp_path):
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "kvbench.cli", "run"]
    with KvEndpoint() as server:
        spec = write_spec(tmp_path, server.url, stop="duration_s: 3")
        # started as a script's background job is: SIGINT ignored (kill <pid> must still work)
        first = subprocess.Popen(
            [*cli, str(spec), "--out", str(run)],
            stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        try:
            _wait_for(lambda: _running(run))
            second = subprocess.run(
                [*cli, str(spec), "--out", str(run), "--resume"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert second.returncode == 2
            assert f"pid {first.pid}" in one_line(second.stderr)
            time.sleep(1.0)  # a second into the cell: some requests done, some in flight
            first.send_signal(signal.SIGTERM)
            _, err = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == 143, err.decode()
        assert b"Traceback" not in err
        interrupted = [c for c, s in statuses(run).items() if s == "interrupted"]
        assert len(interrupted) == 1
        rows = pd.read_parquet(run / "cells" / interrupted[0] / "requests.parquet")
        assert (rows["status"] == "ok").sum() > 0  # the rows so far were flushed
        cell = json.loads((run / "cells" / interrupted[0] / "cell.json").read_text())
        assert cell["status"] == "interrupted"
        done = subprocess.run(
            [*cli, str(spec), "--out", str(run), "--resume"], capture_output=True, timeout=300
        )
    assert done.returncode == 0, done.stderr.decode()
    assert set(statuses(run).values()) == {"ok"}


def test_a_full_disk_mid_run_is_one_line_exit_1_and_resume_finishes(tmp_path, capsys, monkeypatch):
    from kvbench.results import store

    run = tmp_path / "run"
    real_flush = store.PartWriter.flush
    flushes = {"n": 0}

    def flush_until_the_disk_fills(self):
        if self.rows and self.schema is store.REQUEST_SCHEMA:
            flushes["n"] += 1
            if flushes["n"] >= 3:  # the third cell's request rows do not fit any more
                raise OSError(errno.ENOSPC, "No space left on device", str(self.directory))
        real_flush(self)

    with KvEndpoint() as server:
        spec = str(write_spec(tmp_path, server.url))
        monkeypatch.setattr(store.PartWriter, "flush", flush_until_the_disk_fills)
        code = main(["run", spec, "--out", str(run)])
        line = one_line(capsys.readouterr().err)
        assert code == 1
        assert "No space left on device" in line and "--resume" in line
        before = statuses(run)
        assert list(before.values()).count("ok") == 2  # the cells measured before stay valid
        monkeypatch.setattr(store.PartWriter, "flush", real_flush)  # disk freed
        assert main(["run", spec, "--out", str(run), "--resume"]) == 0
    assert set(statuses(run).values()) == {"ok"}


def test_out_naming_a_file_is_one_line_exit_1(tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    code = main(["run", str(write_spec(tmp_path, "http://127.0.0.1:1")), "--out", str(a_file)])
    assert code == 1
    assert "is a file" in one_line(capsys.readouterr().err)


def test_an_unreachable_k8s_api_server_is_one_line_exit_1(tmp_path, capsys):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    spec = write_spec(tmp_path, "unused").read_text()
    spec = spec.replace(
        'target: {kind: endpoint, url: "unused"}',
        f'target: {{kind: k8s, kubeconfig: "{kubeconfig}", gateway_url: "http://127.0.0.1:1"}}',
    )
    (tmp_path / "spec.yaml").write_text(spec)
    run = tmp_path / "run"
    code = main(["run", str(tmp_path / "spec.yaml"), "--out", str(run)])
    line = one_line(capsys.readouterr().err)
    assert code == 1
    assert "unreachable" in line and f"127.0.0.1:{port}" in line
    assert set(statuses(run).values()) == {"pending"}  # nothing ran; --resume will run them
