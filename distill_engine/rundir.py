"""The run directory: what may be written where, one process at a time, and what a run is.

A run directory holds `run.json` (the run's id, seed, fingerprint and status), `recipe.json`,
`metrics.jsonl`, one folder of checkpoints per phase, `state/` (run-state checkpoints for
`--resume`) and `summary.json`. The rules that keep a user's work safe live here:
- a directory that holds another run is refused unless the user says `--resume` or `--overwrite`;
  one that holds anything else is always refused (the engine never deletes what it did not write);
- one process at a time (an advisory lock on `.lock`);
- every path the runner writes is checked to stay inside the directory;
- what a killed write left behind (temporary folders, a half-done swap) is repaired at the start.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Literal

import attrs

from distill_engine.errors import DistillError, RecipeError
from distill_engine.io import recover_interrupted_writes, write_json_atomically

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
# where `run --nproc N` has msrun write its workers' logs (msrun creates it before any rank runs,
# so it is not "another run"; it is kept across --overwrite: the launcher writes it anew)
LAUNCHER_LOGS = "launcher-logs"
STATE_DIR = "state"
# What a run writes at the top of its directory besides the phases' folders. A directory holding
# only these (and phase folders named in run.json) is a run the engine may replace on --overwrite.
RUN_MARKERS = ("recipe.json", "metrics.jsonl", "summary.json", RUN_FILE)

Mode = Literal["new", "resume", "overwrite"]


class RunDirError(DistillError):
    """The output directory cannot be used as asked (it holds another run, is not writable, ...)."""


def check_output_dir(path: Path) -> None:
    """Fail with one line if `path` cannot become a run directory: a file, or not creatable or
    not writable. Creates nothing (for `validate`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run.output_dir: {path} is a file, not a directory")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirError(f"run.output_dir: cannot create {path}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == path else f"cannot be created ({probe} is not writable)"
        raise RunDirError(f"run.output_dir: {path} {what}")


def _is_run(path: Path) -> bool:
    return any((path / name).is_file() for name in RUN_MARKERS)


@attrs.frozen
class ModeWords:
    """How the caller asks for a resume or an overwrite, a backend and an output directory: the
    refusals name the caller's own words (the command line's flags, the Python API's arguments)."""

    resume: str = "--resume"
    overwrite: str = "--overwrite"
    backend: str = "--backend"
    output_dir: str = "--output-dir"


CLI_WORDS = ModeWords()
API_WORDS = ModeWords("resume=True", "overwrite=True", "backend", "output_dir")


class RunDirectory:
    """One run's directory, opened for a new run, a resume or an overwrite."""

    def __init__(self, path: Path, words: ModeWords = CLI_WORDS):
        self.path = Path(path)
        self.words = words
        self._lock_fd: int | None = None

    # --- opening -----------------------------------------------------------------------------
    def check_mode(self, mode: Mode) -> list[Path]:
        """Refuse, creating nothing, a directory that `open(mode)` would refuse; return what it holds."""
        check_output_dir(self.path)
        existing = [p for p in self.path.iterdir() if p.name not in (LOCK_FILE, LAUNCHER_LOGS)] if self.path.is_dir() else []
        if existing and not _is_run(self.path):
            shown = ", ".join(sorted(p.name for p in existing)[:5])
            raise RunDirError(f"run.output_dir: {self.path} is not empty and holds no distill-engine run "
                              f"({shown}{', ...' if len(existing) > 5 else ''}); choose an empty or new directory")
        if existing and mode == "new":
            info = self.read_run() or {}
            started = info.get("created")
            when = f", started {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}" if started else ""
            raise RunDirError(f"run.output_dir: {self.path} holds another run (id {info.get('id', 'unknown')}{when}); "
                              f"pass {self.words.resume} to continue it or {self.words.overwrite} to replace it")
        return existing

    def open(self, mode: Mode) -> dict | None:
        """Make the directory usable for `mode` and lock it; return the existing run.json for a
        resume (None when there is nothing to resume: the run then starts fresh)."""
        existing = self.check_mode(mode)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"run.output_dir: cannot create {self.path} ({exc.strerror})") from None
        self._lock()
        if existing and mode == "overwrite":
            self.clear()
            return None
        if mode == "resume" and existing:
            info = self.read_run()
            if info is None:
                self.close()
                raise RunDirError(f"run.output_dir: {self.path} holds a run without run state (written by an older "
                                  "distill-engine or stopped before it began); it cannot be resumed: pass "
                                  f"{self.words.overwrite} to replace it")
            for line in recover_interrupted_writes(self.path):
                print(f"note: {line}")
            return info
        return None

    def _lock(self) -> None:
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"run.output_dir: another distill-engine process is running in {self.path}") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def clear(self) -> None:
        """Delete the previous run's files (--overwrite, or a resume with no state to resume from).
        Only a directory that holds a run gets here."""
        for entry in self.path.iterdir():
            if entry.name in (LOCK_FILE, LAUNCHER_LOGS):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    # --- run.json ------------------------------------------------------------------------------
    def read_run(self) -> dict | None:
        path = self.path / RUN_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{path}: damaged ({exc})") from None

    def write_run(self, info: dict) -> None:
        write_json_atomically(self.path / RUN_FILE, info)

    @staticmethod
    def new_run_id() -> str:
        return uuid.uuid4().hex[:12]

    # --- paths ---------------------------------------------------------------------------------
    def inside(self, *parts: str) -> Path:
        """A path under the run directory; anything that would leave it is refused."""
        target = self.path.joinpath(*parts)
        root = self.path.resolve()
        resolved = target.resolve()
        if resolved != root and root not in resolved.parents:
            raise RecipeError(f"refusing to write {target}: it is outside run.output_dir ({self.path})")
        return target
