"""SIGINT/SIGTERM during a run: finish the current step, write the run state, stop cleanly.

The handler only records the request; the runner checks it after every step (and between
phases), writes a state and raises `RunInterrupted`, whose message tells how to resume. A second
SIGINT while a request is pending stops at once (KeyboardInterrupt): what was last written stays
whole, since every write is atomic.
"""

from __future__ import annotations

import signal
import threading

from distill_engine.errors import DistillError


class RunInterrupted(DistillError):
    """The run stopped on a signal after writing its state; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class StopRequests:
    """Context manager installing the handlers for the duration of a run (main thread only)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum, _frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
