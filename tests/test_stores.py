import redis

from kvbench.emulator.stores import KVStoreServer


def test_store_server_is_real_and_stops_by_pid(kv_store_server):
    client = redis.Redis.from_url(kv_store_server.redis_url)
    client.set("k", b"v")
    assert client.get("k") == b"v"
    info = client.info("server")
    if kv_store_server.kind == "valkey":
        assert info["server_name"] == "valkey"
    else:
        assert "server_name" not in info and info["redis_version"].startswith("7")
    assert client.config_get("save")["save"] == ""  # no persistence


def test_store_stop_leaves_no_process():
    server = KVStoreServer("valkey").start()
    process = server.process
    server.stop()
    assert process.poll() is not None


def test_store_dies_with_its_parent(tmp_path):
    """A kvbench process killed outright (SIGKILL) must not leave its store running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "pid"
    script = (
        "import sys, time\n"
        "from kvbench.emulator.stores import KVStoreServer\n"
        "server = KVStoreServer('redis').start()\n"
        f"open({str(pid_file)!r}, 'w').write(str(server.pid))\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "store did not start"
        time.sleep(0.05)
    store_pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(store_pid, 0)
        except ProcessLookupError:
            return
        try:  # reap if it became our zombie (it is not our child, so this normally raises)
            os.waitpid(store_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    os.kill(store_pid, signal.SIGKILL)
    raise AssertionError("the store outlived its SIGKILLed parent")


def test_stale_work_dirs_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    import os
    import subprocess

    from kvbench.emulator.stores import clean_stale_workdirs

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs (a kvbench killed with -9)
    stale = tmp_path / f"kvbench-redis-{gone.pid}-abc123"
    live = tmp_path / f"kvbench-valkey-{os.getpid()}-def456"
    other = tmp_path / "kvbench-redis-notapid"
    for path in (stale, live, other):
        path.mkdir()
        (path / "server.log").write_text("x")
    assert clean_stale_workdirs(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_a_store_that_fails_to_start_leaves_no_work_dir(tmp_path):
    import socket
    import tempfile
    from pathlib import Path

    import pytest

    from kvbench.emulator.stores import StoreUnavailable

    def mine() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob(f"kvbench-valkey-{os.getpid()}-*"))

    import os

    before = mine()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(StoreUnavailable):
            KVStoreServer("valkey", port=taken.getsockname()[1]).start(timeout_s=5)
    assert mine() == before
