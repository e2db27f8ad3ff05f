"""TensorBoard event files of a run (`run.tensorboard = true`), written beside metrics.jsonl.

Each `train` record becomes scalars `<phase>/<term>` (every loss term, `total`) and `<phase>/lr`,
each `eval` record `dev/<metric>`, all against the run's global step: the steps of the phases
finished before plus the step within the phase, so phases follow each other on one axis (the run
report's plots use the same). tensorboardX writes the files (the extra `tensorboard`); it is
imported only when a run asks for them, and `check_available` refuses such a run before training
when it is missing. Rank 0 alone writes, as it alone writes metrics.jsonl.

A resumed run opens a new event file with `purge_step` at its first recomputed step: TensorBoard
then drops what the interrupted attempt logged past its run state, as metrics.jsonl is cut there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from distill_engine.errors import RecipeError
from distill_engine.metrics_log import record_values

TENSORBOARD_DIR = "tensorboard"


def check_available(enabled: bool) -> None:
    """Refuse `run.tensorboard = true` when tensorboardX is not installed (one line, before training)."""
    if enabled and importlib.util.find_spec("tensorboardX") is None:
        raise RecipeError('run.tensorboard: true needs tensorboardX, which is not installed: pip install '
                          '"distill-engine[tensorboard]" (or tensorboardX), or set run.tensorboard = false')


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without importing PyTorch: its writer module tries
    `import torch` (for add_embedding and tensors) when it is loaded, which would load PyTorch into
    a MindSpore run only to write scalars. Where torch is not loaded yet, that import is made to
    fail while tensorboardX loads (scalars need only numpy); torch stays importable afterwards."""
    import sys

    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX catches
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class TensorBoardLog:
    """Turns metrics.jsonl records into TensorBoard scalars in `directory`."""

    def __init__(self, directory: Path, purge_step: int | None = None):
        SummaryWriter = _summary_writer_class()
        self.writer = SummaryWriter(str(directory), purge_step=purge_step, flush_secs=30)

    def add(self, record: dict, offset: int) -> None:
        """Write `record`'s values (a train or eval record; others are skipped) at global step
        `offset + record["step"]`."""
        event = record.get("event")
        if event not in ("train", "eval") or not isinstance(record.get("step"), int):
            return
        step = offset + record["step"]
        prefix = record.get("phase", "run") if event == "train" else "dev"
        for name, value in record_values(record).items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step, walltime=record.get("time"))

    def close(self) -> None:
        self.writer.close()
