"""SIGTERM handled exactly like SIGINT, so `kill <pid>` stops a run as cleanly as Ctrl-C.

Contract: inside `with TerminationAsInterrupt() as t:` a SIGTERM sets `t.terminated` and raises
SIGINT in this process. Whatever handles SIGINT at that moment handles it: Python's default
(KeyboardInterrupt) or asyncio.run's (which cancels the running cell's tasks, each in-flight request
recording itself as cancelled, then raises KeyboardInterrupt). The runner then marks the running
cell interrupted, flushes its rows and stops its deployment; the CLI exits 143 (128 + SIGTERM)
instead of 130. The previous SIGTERM handler is restored on exit. Only the main thread installs it.

A process started in the background by a non-interactive shell (`kvbench run ... &` in a script,
CI runners) inherits SIGINT ignored; SIGTERM would then raise a signal nobody handles. Inside the
block SIGINT therefore gets Python's default handler when it was ignored (restored on exit): a
background job is not in the terminal's foreground group, so no Ctrl-C reaches it anyway.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

SIGINT_EXIT = 130  # 128 + SIGINT
SIGTERM_EXIT = 143  # 128 + SIGTERM


class TerminationAsInterrupt:
    def __init__(self) -> None:
        self.terminated = False
        self._previous: Any = None
        self._previous_sigint: Any = None
        self._installed = False

    def __enter__(self) -> TerminationAsInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
                self._previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
            self._installed = True
        return self

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.terminated = True
        signal.raise_signal(signal.SIGINT)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            if self._previous_sigint is not None:
                signal.signal(signal.SIGINT, self._previous_sigint)
                self._previous_sigint = None
            self._installed = False
