"""One kvbench process per run directory: an advisory lock file naming its holder.

Contract: `RunLock(run_dir).acquire()` creates `run_dir` if needed and takes an exclusive
`flock` on `run_dir/.kvbench.lock`, writing this process's pid into it. A second process (a second
`--resume` on the same `--out`) gets a one-line `UserError` naming the holder's pid, before it
touches anything. The kernel drops the lock when the holder exits, however it exits (kill -9
included), so a stale lock file never blocks: the next process simply takes it. `release()` (or
leaving the `with` block) empties the file and unlocks it; the file stays (removing it would let
two processes lock two different files of the same name).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from kvbench.errors import EnvironmentFailure, UserError

LOCK_FILE = ".kvbench.lock"


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise EnvironmentFailure(f"--out: {self.run_dir} is a file, not a run directory")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"kvbench pid {holder}" if holder else "another kvbench process"
            raise UserError(
                f"--out: {self.run_dir} is in use by {who} (lock {self.path}); "
                f"wait for it to finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # the lock itself goes with the descriptor
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
