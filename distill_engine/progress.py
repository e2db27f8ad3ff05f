"""A training phase's progress on stderr: tqdm's bar on a terminal, plain lines elsewhere.

Without a terminal (nohup, CI, `2> log`) a bar is noise, yet a run that prints nothing for minutes
looks hung. So when stderr is not a terminal and the caller left the choice open
(`progress=None`), a phase prints one line every `every_s` seconds of wall time and one at its end:

    [td2] step 120/900 (13 %), loss 0.4213, 2.31 steps/s, 5:38 left

Lines, not a bar: each is whole and ends in a newline, so a log file or a CI console reads well.
The speed counts only the steps this process ran (a resumed phase's earlier steps are left out),
so the time left is honest right after a resume too.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

# seconds between two progress lines when stderr is not a terminal (`run --progress-every`)
DEFAULT_EVERY_S = 30.0


def _left(seconds: float) -> str:
    """5:38, 1:02:03; "?" before any speed is known."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLines:
    """tqdm's update/set_postfix/close, printing a line every `every_s` seconds and at the end."""

    def __init__(self, total: int, name: str, *, initial: int = 0, every_s: float = DEFAULT_EVERY_S,
                 stream: TextIO | None = None, clock=time.monotonic):
        self.total, self.name, self.every_s = total, name, every_s
        self.step = self.first = initial
        self.stream = stream
        self.clock = clock
        self.start = self.last = clock()
        self.loss: str | None = None
        self.printed_at: int | None = None

    def update(self, n: int = 1) -> None:
        self.step += n
        if self.clock() - self.last >= self.every_s:
            self._line()

    def set_postfix(self, loss: str | None = None, refresh: bool = False) -> None:  # noqa: ARG002 (tqdm's signature)
        self.loss = loss

    def close(self) -> None:
        """The phase's last line (its end, or where an interruption or error left it), unless the
        last line already said this step."""
        if self.step > self.first and self.printed_at != self.step:
            self._line()

    def line(self) -> str:
        now = self.clock()
        done = self.step - self.first
        speed = done / (now - self.start) if now > self.start and done else 0.0
        left = (self.total - self.step) / speed if speed else float("nan")
        parts = [f"[{self.name}] step {self.step}/{self.total} ({100 * self.step // max(self.total, 1)} %)"]
        if self.loss is not None:
            parts.append(f"loss {self.loss}")
        # slow steps (a BERT-base teacher on a CPU) read better as seconds a step
        parts.append("? steps/s" if not speed else f"{speed:.3g} steps/s" if speed >= 1 else f"{1 / speed:.3g} s/step")
        parts.append("done" if self.step >= self.total else f"{_left(left)} left")
        return ", ".join(parts)

    def _line(self) -> None:
        print(self.line(), file=self.stream or sys.stderr, flush=True)
        self.last = self.clock()
        self.printed_at = self.step


def phase_progress(total: int, name: str, enabled: bool | None, *, initial: int = 0,
                   every_s: float = DEFAULT_EVERY_S):
    """A phase's progress display: True a tqdm bar; False nothing; None a bar when stderr is a
    terminal, else `ProgressLines` (`every_s` <= 0: nothing)."""
    if enabled is None and not _is_terminal(sys.stderr):
        if every_s > 0:
            return ProgressLines(total, name, initial=initial, every_s=every_s)
        enabled = False
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="step",
                disable=(None if enabled is None else not enabled), file=sys.stderr, dynamic_ncols=True, leave=False)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream: not a terminal
        return False
