"""Data-parallel training, the neutral half: who this process is, its share of each global batch,
and the few values the ranks must agree on.

The frameworks' own engines do the work: a launcher (torchrun, MindSpore's msrun) starts N copies
of `distill-engine run`; each asks its backend for the process group (`Backend.process_group`),
which initialises the framework's communication (gloo/NCCL, MindSpore's HCCL/NCCL/CPU collective)
and describes it here in plain numbers. The gradient all-reduce lives inside each backend's step
(DistributedDataParallel, MindSpore's DistributedGradReducer). The core needs only `all_sum`, an
element-wise sum of a small float array over the ranks, for:

- the step's agreement (`StepAgreement`): one all-reduce per step carries the stop request (a
  signal seen by any rank), the "a run state is due" flag (checkpoint_minutes is a clock each rank
  reads for itself) and the step's loss terms weighted by rows, so that every rank logs, guards
  against divergence and stops on the same global numbers at the same step;
- evaluation, sharded by batches and gathered by summing the logits into a zeroed array (exact:
  each row is written by one rank, x + 0 = x), so every rank holds the same metrics and makes the
  same best-checkpoint decision;
- barriers (an all_sum of nothing), around what rank 0 alone writes.

Semantics (what makes N processes compute the steps of one): `batch_size` is the global batch.
Every rank walks the same global batch order (same seed, same epochs); the batch is shaped once
(its padded length is the global batch's) and rank r takes its contiguous share of the rows
(`share`). The step's loss is the mean over the rank's rows; with a per-rank `loss_weight` of
N * rows_r / rows the framework's gradient mean over ranks is exactly the global batch's mean
gradient, also for an epoch's last, smaller batch. The learning-rate schedule counts global steps,
as a single process does. (Losses with `mask_padding` divide by real tokens, not rows: each rank
then normalises by its own real tokens, a slightly different weighting than one process; the
recipes' TinyBERT phases keep mask_padding off.)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs
import numpy as np

from distill_engine.errors import DistillError, RecipeError

# Set by `distill-engine run --nproc N` for the ranks it launches: their resume hint says --nproc N.
NPROC_ENV = "DISTILL_ENGINE_NPROC"
# The batch key of a rank's loss weight (a 0-d float32 array): the step scales the loss whose
# gradient it applies by it; the loss values it returns are unweighted. Absent: weight 1.
LOSS_WEIGHT = "loss_weight"


class RankFailed(DistillError):
    """Another rank failed: this one stops too (the failing rank printed the reason)."""


@runtime_checkable
class ProcessGroup(Protocol):
    """The processes of one data-parallel run, as a backend describes them. Optionally `close()`:
    called once when the run ends (the command's last act), to leave the group (torch's
    destroy_process_group)."""

    rank: int  # 0 .. world_size - 1; rank 0 writes the run directory
    world_size: int
    local_rank: int  # the rank on this machine: picks the GPU/NPU
    launcher: str  # "torchrun", "msrun", or "" for a single process

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        """The element-wise sum of `values` (a 1-d float array, the same shape on every rank) over
        all ranks, returned on every rank (float64, or float32 where the framework's collective
        has no float64)."""


@attrs.frozen
class SingleProcess:
    """The process group of a run without a launcher."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = ""

    def all_sum(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, np.float64)


SINGLE = SingleProcess()


def join_process_group(backend, device) -> ProcessGroup:
    """This process's group: the backend's, when a launcher started it (`Backend.process_group`,
    optional), else a single process."""
    hook = getattr(backend, "process_group", None)
    group = hook(device) if callable(hook) else None
    if group is None:
        return SINGLE
    if not isinstance(group, ProcessGroup):
        raise DistillError(f'backend "{backend.name}": process_group() returned {type(group).__name__}, '
                           "not a ProcessGroup")
    if not (0 <= group.rank < group.world_size) or not (0 <= group.local_rank <= group.rank):
        raise DistillError(f'backend "{backend.name}": inconsistent process group (rank {group.rank}, '
                           f"world size {group.world_size}, local rank {group.local_rank})")
    return group


def barrier(group: ProcessGroup) -> None:
    if group.world_size > 1:
        group.all_sum(np.zeros(1))


def any_rank(group: ProcessGroup, flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one."""
    if group.world_size == 1:
        return bool(flag)
    return bool(group.all_sum(np.array([1.0 if flag else 0.0]))[0] > 0)


def share(rows: int, rank: int, world_size: int) -> slice:
    """Rank `rank`'s contiguous part of a batch of `rows` rows: rows // N each, the first rows % N
    ranks one more. A rank may get none (a last batch smaller than N)."""
    base, extra = divmod(rows, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


@attrs.frozen
class Shard:
    """One rank's part of a global batch: the dataset rows, the batch (already shaped to the
    global batch's length), and the loss weight N * rows_r / rows (0 for a rank with no row,
    which steps on a copy of the batch's first row so that its collective still runs)."""

    rows: np.ndarray
    batch: dict
    weight: float
    real_rows: int


def shard_batch(batch: dict, rows: np.ndarray, group: ProcessGroup) -> Shard:
    n = len(rows)
    if group.world_size == 1:
        return Shard(rows, batch, 1.0, n)
    part = share(n, group.rank, group.world_size)
    count = part.stop - part.start
    if count == 0:
        part = slice(0, 1)  # weight 0: a placeholder that contributes nothing to the gradient
    local = {k: (v[part] if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n else v) for k, v in batch.items()}
    weight = group.world_size * count / n
    local[LOSS_WEIGHT] = np.array(weight, np.float32)
    return Shard(rows[part], local, weight, count)


def check_global_batches(phases, world_size: int) -> None:
    """Refuse, before any training, a training phase whose batch_size the ranks cannot split evenly."""
    if world_size == 1:
        return
    for phase in phases:
        spec = phase.spec
        if spec.kind == "evaluate":
            continue
        if spec.batch_size % world_size:
            raise RecipeError(f"{phase.where}.batch_size: {spec.batch_size} is the global batch, split over "
                              f"{world_size} processes; it must be a multiple of {world_size}")


class StepAgreement:
    """The one collective the training loop adds per step: [stop, state due, rows, loss terms x rows]
    summed over the ranks. `agree` returns (stop, due, global loss values)."""

    def __init__(self, group: ProcessGroup):
        self.group = group

    def agree(self, stop: bool, due: bool, values: dict[str, float], rows: int,
              total_rows: int) -> tuple[bool, bool, dict[str, float]]:
        if self.group.world_size == 1:
            return stop, due, values
        keys = [k for k in values if k != "lr"]
        vec = np.array([float(stop), float(due), *(values[k] * rows for k in keys)], np.float64)
        summed = self.group.all_sum(vec)
        merged = {k: float(summed[2 + i]) / total_rows for i, k in enumerate(keys)}
        if "lr" in values:
            merged["lr"] = values["lr"]
        return bool(summed[0] > 0), bool(summed[1] > 0), merged
