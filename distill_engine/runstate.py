"""Run-state checkpoints: what `run --resume` continues from.

Each state is one directory under `<run>/state/`, named `<seq>-<phase>-<step>` (mid-phase) or
`<seq>-<phase>-end` (a phase finished), written atomically (it exists whole or not at all):
- `state.json`: the position (phase index, step, epoch, batch within the epoch), the best
  metric so far, the divergence guard's reference losses, the results of finished phases, which
  checkpoint each finished phase handed on, the byte length of metrics.jsonl at that moment (a
  resume cuts the log back to it, so no step record is ever duplicated), the run id and fingerprint;
- `weights.safetensors`: the model being trained (the student, or the teacher while fine-tuning),
  with its head and projections, canonical names;
- `trainer.safetensors`: the trainer's state (Adam moments and step, schedule position,
  loss scale, the framework's dropout RNG), see `Trainer.state`;
- `best.safetensors`: the phase's best weights so far, a hard link to `<phase>/best` at that
  moment (free on disk; it survives a later rewrite of `best`, so the state stays consistent).
Nothing here is pickle: JSON and safetensors only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import attrs
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from distill_engine.errors import CheckpointError
from distill_engine.io import write_directory_atomically

STATE_JSON = "state.json"
TENSOR_FILES = ("weights", "trainer", "best")


@attrs.frozen(eq=False)
class SavedState:
    """A complete run state found on disk."""

    path: Path
    doc: dict

    def tensors(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays of `weights`, `trainer` or `best` (None when this state has none)."""
        file = self.path / f"{name}.safetensors"
        if not file.is_file():
            return None
        try:
            return load_file(str(file))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{file}: cannot read run state ({exc})") from None


class StateStore:
    """Writes, lists and prunes the run states of one run directory."""

    def __init__(self, root: Path, keep: int):
        self.root = Path(root)
        self.keep = max(1, int(keep))

    def _complete(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir()
                 if p.is_dir() and not p.name.startswith(".") and (p / STATE_JSON).is_file()]
        return sorted(found, key=lambda p: p.name)

    def next_seq(self) -> int:
        done = self._complete()
        return int(done[-1].name.split("-", 1)[0]) + 1 if done else 0

    def write(self, name: str, doc: dict, tensors: dict[str, dict[str, np.ndarray]],
              best_file: Path | None = None) -> Path:
        """Write one state atomically, then drop all but the last `keep` states."""
        seq = self.next_seq()
        path = self.root / f"{seq:06d}-{name}"

        def fill(tmp: Path) -> None:
            for key, arrays in tensors.items():
                # np.array, not np.ascontiguousarray: that one turns 0-d arrays (step counts) 1-d
                save_file({k: np.array(v, order="C") for k, v in arrays.items()}, str(tmp / f"{key}.safetensors"))
            if best_file is not None:
                try:
                    os.link(best_file, tmp / "best.safetensors")
                except OSError:  # another file system, or links not allowed: a copy does the same
                    shutil.copyfile(best_file, tmp / "best.safetensors")
            (tmp / STATE_JSON).write_text(json.dumps({**doc, "seq": seq}, indent=1, default=_plain))

        write_directory_atomically(path, fill)
        for old in self._complete()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def latest(self) -> SavedState | None:
        """The newest state whose state.json reads back (an older one if the newest is damaged)."""
        for path in reversed(self._complete()):
            try:
                doc = json.loads((path / STATE_JSON).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            return SavedState(path, doc)
        return None

    def size_bytes(self, path: Path) -> int:
        # a hard-linked best counts once on disk, but it is part of what a state needs
        return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
