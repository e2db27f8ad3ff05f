"""The seam: what a backend implements. Everything that crosses it is plain data.

Inputs are `BertConfig`, canonical-name float32 numpy state dicts, numpy batches
({"input_ids", "token_type_ids", "attention_mask"[, "labels"]}, int32 ids/masks) and the
specs of `distill_engine.optim` / `distill_engine.graph`. Outputs are numpy arrays and floats.
The neutral runner owns the loop (phases, data order, evaluation, checkpoints, logs); a backend
owns the step (model build, forward taps, losses, backward, optimiser update).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs
import numpy as np

from distill_engine.bert import BertConfig
from distill_engine.device import Device
from distill_engine.graph import DistillGraph, Taps
from distill_engine.optim import OptimizerSpec

Batch = dict[str, np.ndarray]
State = dict[str, np.ndarray]


@attrs.frozen(eq=False)
class TrainSpec:
    """Everything a backend needs to build the training step of one phase.

    `learning_rates[s]` is the rate of step s (computed by the core). `seed` seeds dropout.
    `loss_scale` is the initial dynamic loss scale for float16 training (None: float32, no
    scaling); `loss_scale_window` steps without overflow double it.
    """

    graph: DistillGraph
    optimizer: OptimizerSpec
    learning_rates: np.ndarray
    seed: int = 0
    loss_scale: float | None = None
    loss_scale_window: int = 1000


@runtime_checkable
class Model(Protocol):
    """A BERT (teacher or student) living on a backend's device."""

    config: BertConfig

    def state_dict(self) -> State:
        """Every parameter under its canonical name, as float32 numpy arrays (a copy)."""

    def forward(self, batch: Batch) -> Taps:
        """Inference forward (no dropout, no gradient recording) returning every tap as numpy."""

    def predict(self, batch: Batch) -> np.ndarray:
        """Inference logits [B, num_labels] as numpy; the fast path for evaluation."""


@runtime_checkable
class Trainer(Protocol):
    """The compiled/optimised training step of one phase; it updates the student in place."""

    def step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step on `batch`: forward (with dropout), losses, backward, clipping,
        update with this step's learning rate. Returns each loss term by kind, "total", and
        "lr"."""

    def losses(self, batch: Batch) -> dict[str, float]:
        """The objective's terms on `batch` without updating (no dropout); for checks."""


@runtime_checkable
class Backend(Protocol):
    """A framework plugin. Registered through the `register_backends` hook."""

    name: str

    def version(self) -> str:
        """The backend's own version and its framework's, e.g. "0.1.0 (torch 2.13.0)"."""

    def device_kinds(self) -> tuple[str, ...]:
        """The device kinds this backend is written for ("cpu", "gpu", "ascend")."""

    def available_devices(self) -> list[Device]:
        """The devices actually usable on this machine now."""

    def check_device(self, device: Device) -> None:
        """Raise `DeviceError` naming the device if this backend cannot serve it here."""

    def load_model(self, config: BertConfig, state: State, device: Device) -> Model:
        """Build a model of `config` holding exactly `state` (canonical names, checked by the core)."""

    def trainer(self, student: Model, teacher: Model | None, spec: TrainSpec) -> Trainer:
        """Build the training step for `student` under `spec.graph`; `teacher` is frozen."""

    # Optional (not part of the structural check, so older plugins stay valid):
    #     def release(self) -> None:
    #         """Free what the backend caches for models that are gone (compiled graphs, memory
    #         pools). The runner calls it between phases, after dropping the phase's models."""


def release_caches(backend: Backend) -> None:
    """Call the backend's optional `release()`: between phases, once their models are dropped.

    Why: a compiling framework keeps every graph it built (MindSpore keeps a few GB per phase);
    without this, a five-phase pipeline holds all five phases' graphs at once."""
    release = getattr(backend, "release", None)
    if callable(release):
        release()


def check_device_in(backend: Backend, device: Device) -> None:
    """Shared check: the device's kind is one the backend serves and it is present here."""
    from distill_engine.errors import DeviceError

    if device.kind not in backend.device_kinds():
        raise DeviceError(f'backend "{backend.name}" does not support device "{device}" '
                          f'(it serves {", ".join(backend.device_kinds())})')
    if device not in backend.available_devices():
        avail = ", ".join(str(d) for d in backend.available_devices()) or "none"
        raise DeviceError(f'device "{device}" is not available to backend "{backend.name}" on this machine '
                          f"(available: {avail})")
