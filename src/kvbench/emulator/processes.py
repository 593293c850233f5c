"""Child server processes, started and stopped by pid.

Contract: every process is started in its own session (a Ctrl-C in the terminal reaches only the
parent, which then stops the children in order) with PR_SET_PDEATHSIG=SIGTERM on Linux (a parent
killed outright still takes its children down); output goes to a log file. `stop()` sends SIGTERM
to the process group (the pid is the group id), waits, then SIGKILLs it. `ProcessSet.stop_all()` is
idempotent and is registered with atexit while anything runs.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A server did not come up; `log_tail` is the end of its log."""

    def __init__(self, message: str, log_tail: str | None = None):
        super().__init__(message)
        self.log_tail = log_tail


def die_with_parent() -> None:  # runs in the child between fork and exec (preexec_fn)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def log_tail(path: Path, max_chars: int = 4000) -> str:
    try:
        with Path(path).open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_chars))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass
class ServerProcess:
    name: str
    popen: subprocess.Popen
    log_path: Path
    health_url: str | None = None
    argv: list[str] = field(default_factory=list)  # how it was started (restart reuses them)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, first_signal: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        if self.popen.poll() is None:
            _signal_group(self.pid, first_signal)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout_s)
        _signal_group(self.pid, signal.SIGKILL)  # anything the server left in its group


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class ProcessSet:
    """The processes of one stack, stopped in reverse start order."""

    processes: list[ServerProcess] = field(default_factory=list)
    stop_signal: int = signal.SIGTERM
    _registered: bool = False

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        health_url: str | None = None,
    ) -> ServerProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        process = ServerProcess(name, popen, log_path, health_url, list(argv), dict(env))
        self.processes.append(process)
        if not self._registered:
            atexit.register(self.stop_all)
            self._registered = True
        return process

    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.processes}

    def restart(self, name: str, timeout_s: float, stop_timeout_s: float = 30.0) -> ServerProcess:
        """Stop the process called `name` and start it again with the same command, environment,
        log (appended) and health URL, in the same place of the stop order; returns once healthy
        (else StartError, as `wait_healthy`)."""
        index = next(i for i, p in enumerate(self.processes) if p.name == name)
        old = self.processes[index]
        old.stop(self.stop_signal, stop_timeout_s)
        self.processes.pop(index)
        new = self.spawn(name, old.argv, old.env, old.log_path, old.health_url)
        self.processes.remove(new)
        self.processes.insert(index, new)
        wait_healthy([new], timeout_s)
        return new

    def stop_all(self, timeout_s: float = 10.0) -> None:
        for process in reversed(self.processes):
            process.stop(self.stop_signal, timeout_s)
        self.processes.clear()
        if self._registered:
            atexit.unregister(self.stop_all)
            self._registered = False


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(
    processes: list[ServerProcess],
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until every process answers 200 on its health URL; a process that exits, or a timeout,
    raises StartError with that process's log tail."""
    deadline = clock() + timeout_s
    waiting = [p for p in processes if p.health_url]
    while waiting:
        for process in list(waiting):
            if not process.alive():
                raise StartError(
                    f"{process.name} exited with code {process.popen.returncode} during start "
                    f"(log: {process.log_path})",
                    log_tail(process.log_path),
                )
            if process.health_url is not None and http_ok(process.health_url):
                waiting.remove(process)
        if waiting and clock() >= deadline:
            first = waiting[0]
            raise StartError(
                f"{first.name} not healthy at {first.health_url} within {timeout_s:g}s "
                f"(log: {first.log_path})",
                log_tail(first.log_path),
            )
        if waiting:
            sleep(0.1)
