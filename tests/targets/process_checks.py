"""Shared check for the target tests: the processes a target started are gone (zombies count as gone)."""

import time

import psutil


def assert_gone(pids: dict[str, int], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    alive = dict(pids)
    while alive and time.monotonic() < deadline:
        alive = {
            n: p
            for n, p in alive.items()
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        }
        time.sleep(0.05)
    assert alive == {}
