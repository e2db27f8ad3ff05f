"""The seam: what a backend implements. Everything that crosses it is plain data.

Inputs are model configs (of a registered model family, `distill_engine.models`; BERT's is
`distill_engine.bert.BertConfig`), canonical-name float32 numpy state dicts, numpy batches
({"input_ids", "token_type_ids", "attention_mask"[, "labels"]}, int32 ids/masks) and the
specs of `distill_engine.optim` / `distill_engine.graph`. Outputs are numpy arrays and floats.
The neutral runner owns the loop (phases, data order, evaluation, checkpoints, logs); a backend
owns the step (model build, forward taps, losses, backward, optimiser update).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
import numpy as np

from distill_engine.device import Device
from distill_engine.errors import CheckpointError, did_you_mean
from distill_engine.graph import DistillGraph, Taps
from distill_engine.optim import OptimizerSpec
from distill_engine.precision import DEFAULT_FP16_LOSS_SCALE, PRECISIONS

Batch = dict[str, np.ndarray]
State = dict[str, np.ndarray]


@attrs.frozen(eq=False)
class TrainSpec:
    """Everything a backend needs to build the training step of one phase.

    `learning_rates[s]` is the rate of step s (computed by the core). `seed` seeds dropout.
    `precision` is what the step computes in (`distill_engine.precision`): "fp32"; "bf16"
    (bfloat16 forwards, loss terms in float32); "fp16" (float16 forwards under dynamic loss
    scaling). In every precision the parameters and the optimiser's moments stay float32; the
    backend serves `precision` on the student's device (plan() checked `Backend.precisions`).
    `loss_scale` is the initial dynamic loss scale (None: no scaling, unless `precision` is
    "fp16", which scales from `DEFAULT_FP16_LOSS_SCALE`); `loss_scale_window` steps without
    overflow double it. `initial_loss_scale` is the scale a trainer starts from, or None.

    `freeze_pad_embedding` (the default): the gradient of the student's word-embedding row
    `pad_token_id` of the student's config is exactly zero, in `Trainer.step` and `gradients` alike, as in Hugging
    Face BERT and the original TinyBERT (`nn.Embedding(padding_idx=...)`). The row still shrinks
    under weight decay (decoupled, as BertAdam and AdamW both apply it). False trains the row like
    any other (`run.train_pad_embedding`).

    `world_size` > 1: a data-parallel step (`distill_engine.distributed`): the backend's process
    group is initialised, each rank's batch is its share of the global batch and carries
    `distributed.LOSS_WEIGHT`; the step averages the weighted gradients over the ranks (the
    framework's all-reduce, before clipping) so that every rank applies the same update. `rank`
    seeds this rank's dropout apart from the others'.
    """

    graph: DistillGraph
    optimizer: OptimizerSpec
    learning_rates: np.ndarray
    seed: int = 0
    loss_scale: float | None = None
    loss_scale_window: int = 1000
    precision: str = attrs.field(default="fp32", validator=attrs.validators.in_(PRECISIONS))
    world_size: int = 1
    rank: int = 0
    freeze_pad_embedding: bool = True

    @property
    def initial_loss_scale(self) -> float | None:
        """The dynamic loss scale the step starts from; None: the loss is not scaled (and the
        trainer state has no "loss_scale.*" keys)."""
        if self.loss_scale is not None:
            return float(self.loss_scale)
        return DEFAULT_FP16_LOSS_SCALE if self.precision == "fp16" else None


@runtime_checkable
class Model(Protocol):
    """A model (teacher or student) of a registered family, living on a backend's device."""

    config: Any  # its family's config (`distill_engine.models.registry.family_of(config)`)

    def state_dict(self) -> State:
        """Every parameter under its canonical name, as float32 numpy arrays (a copy)."""

    def forward(self, batch: Batch) -> Taps:
        """Inference forward (no dropout, no gradient recording) returning every tap as numpy."""

    def predict(self, batch: Batch) -> np.ndarray:
        """Inference logits [B, num_labels] as numpy; the fast path for evaluation. In float32
        whatever `TrainSpec.precision` a trainer of this model uses (evaluation is measured alike)."""


@runtime_checkable
class Trainer(Protocol):
    """The compiled/optimised training step of one phase; it updates the student in place."""

    def step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step on `batch`: forward (with dropout), losses, backward, clipping,
        update with this step's learning rate. Returns each loss term by kind, "total", and
        "lr"."""

    def losses(self, batch: Batch) -> dict[str, float]:
        """The objective's terms on `batch` without updating (no dropout); for checks."""

    def state(self) -> State:
        """Everything beside the student's weights that the next step depends on, as plain named
        numpy arrays (scalars 0-d, nothing pickled), under the neutral names of `trainer_state`:
        Adam's moments per updated parameter ("adam.exp_avg.<canonical name>",
        "adam.exp_avg_sq.<canonical name>"; absent for a parameter with no moments yet), Adam's
        count of applied updates ("adam.step"), the position in the learning-rate schedule
        ("schedule.step": the index of the next step's rate), the dynamic loss scale when
        `TrainSpec.initial_loss_scale` is set ("loss_scale.scale", "loss_scale.good_steps",
        "loss_scale.skipped_steps"), and the framework's dropout RNG under "rng.<backend>.*".
        A copy: reading it does not disturb the trainer."""

    def load_state(self, state: State) -> None:
        """Continue from `state` (what `state()` returned): called on a freshly built trainer, over a
        student freshly loaded with the saved weights, before its first step. Afterwards the trainer
        continues as the original would have (bit for bit where the backend can restore its dropout
        RNG, see `Backend.resume_exact_with_dropout`). "rng.*" keys of other backends are ignored.
        A missing or mis-shaped key, or moments of a parameter this trainer does not update, raise
        `CheckpointError` naming it (`parse_trainer_state` does these checks)."""


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

    def load_model(self, config: Any, state: State, device: Device) -> Model:
        """Build a model of `config` holding exactly `state` (canonical names, checked by the core),
        through the implementation `config`'s model family registered for this backend
        (`distill_engine.models.registry.build_model`; hook `register_model_implementations`)."""

    def trainer(self, student: Model, teacher: Model | None, spec: TrainSpec) -> Trainer:
        """Build the training step for `student` under `spec.graph`; `teacher` is frozen."""

    # Optional (not part of the structural check, so older plugins stay valid):
    #     resume_exact_with_dropout: bool = False
    #         """True when `Trainer.load_state` restores the dropout RNG exactly, so that a resumed
    #         run with dropout is bit-identical to an uninterrupted one (without dropout, every
    #         training backend must be). The conformance suite checks resume with dropout on then."""
    #
    #     def release(self) -> None:
    #         """Free what the backend caches for models that are gone (compiled graphs, memory
    #         pools). The runner calls it between phases, after dropping the phase's models."""
    #
    #     def precisions(self, device: Device) -> tuple[str, ...]:
    #         """The values of `TrainSpec.precision` ("fp32", "bf16", "fp16") this backend trains in
    #         on a device of `device`'s kind, "fp32" first. Without this method a backend serves
    #         "fp32" only. plan() refuses a recipe whose run.precision is not among them, before any
    #         training (`distill_engine.precision.check_precision`)."""
    #
    #     def process_group(self, device: Device) -> distill_engine.distributed.ProcessGroup | None:
    #         """When this process was started by the framework's launcher (torchrun, msrun):
    #         initialise the framework's communication for `device`'s kind (the accelerator of the
    #         local rank) and describe the group; None for a process started alone. Called once per
    #         process, before any model is built. Without it the backend trains in one process."""
    #
    #     def launch_command(self, nproc: int, argv: list[str], log_dir: str) -> list[str]:
    #         """The command that starts `nproc` processes on this machine, each running
    #         `distill-engine <argv>` under the framework's launcher (`distill-engine run --nproc N`);
    #         a launcher that writes log files puts them in `log_dir` (inside the run directory)."""
    #
    #     sigint_as_sigterm: bool = True
    #         """The framework answers a SIGINT (Ctrl-C) that arrives inside its own code with a
    #         SIGTERM to its own process (MindSpore's graph runs do), so the run cannot tell the
    #         two apart; the interruption message then names both."""


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


# --- Trainer state: one neutral naming shared by every backend -----------------------------------
EXP_AVG = "adam.exp_avg."  # + canonical parameter name: Adam's first moment
EXP_AVG_SQ = "adam.exp_avg_sq."  # + canonical parameter name: Adam's second moment
ADAM_STEP = "adam.step"  # applied updates (bias correction's t); a skipped (overflowed) step does not count
SCHEDULE_STEP = "schedule.step"  # steps taken, applied or skipped: the index of the next learning rate
LOSS_SCALE = "loss_scale.scale"
LOSS_SCALE_GOOD_STEPS = "loss_scale.good_steps"  # steps without overflow since the scale last changed
LOSS_SCALE_SKIPPED_STEPS = "loss_scale.skipped_steps"  # overflowed steps, in total
LOSS_SCALE_KEYS = (LOSS_SCALE, LOSS_SCALE_GOOD_STEPS, LOSS_SCALE_SKIPPED_STEPS)
RNG = "rng."  # + backend name + "." + the backend's own parts ("rng.torch.cpu", "rng.torch.cuda.0")


def rng_key(backend: str, *parts: object) -> str:
    """The key of one piece of a backend's RNG state: rng_key("torch", "cuda", 0) == "rng.torch.cuda.0"."""
    return ".".join(["rng", backend, *map(str, parts)])


@attrs.frozen(eq=False)
class TrainerState:
    """A trainer state that `parse_trainer_state` has checked, in plain Python terms."""

    schedule_step: int
    adam_step: int
    moments: dict[str, tuple[np.ndarray, np.ndarray]]  # canonical name -> (exp_avg, exp_avg_sq), float32
    loss_scale: tuple[float, int, int] | None  # (scale, good_steps, skipped_steps); None: not scaled
    rng: dict[str, np.ndarray]  # this backend's "rng.<backend>.*" entries, full keys


def trainer_state(*, schedule_step: int, adam_step: int, moments: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  loss_scale: tuple[float, int, int] | None = None, rng: Mapping[str, np.ndarray] | None = None) -> State:
    """Assemble `Trainer.state()` under the neutral names (copies; scalars as 0-d arrays)."""
    out: State = {SCHEDULE_STEP: np.array(schedule_step, np.int64), ADAM_STEP: np.array(adam_step, np.int64)}
    for name, (m, v) in moments.items():
        out[EXP_AVG + name] = np.array(m, np.float32)
        out[EXP_AVG_SQ + name] = np.array(v, np.float32)
    if loss_scale is not None:
        scale, good, skipped = loss_scale
        out[LOSS_SCALE] = np.array(scale, np.float64)
        out[LOSS_SCALE_GOOD_STEPS] = np.array(good, np.int64)
        out[LOSS_SCALE_SKIPPED_STEPS] = np.array(skipped, np.int64)
    for key, value in (rng or {}).items():
        out[key] = np.array(value)
    return out


def parse_trainer_state(state: Mapping[str, np.ndarray], *, backend: str, parameters: Mapping[str, tuple[int, ...]],
                        loss_scaled: bool) -> TrainerState:
    """Check a trainer state against the trainer that is to load it; raise `CheckpointError` with
    one line naming the first problem (a key that is missing, mis-shaped, of the wrong kind, or
    unknown; moments of a parameter not in `parameters`, the canonical names and shapes this
    trainer updates). Absent moments mean "none yet" (the backend decides whether that is allowed
    at this `adam_step`). "rng.*" keys of other backends are dropped."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"trainer state: expected a mapping of names to numpy arrays, got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"trainer state: key {key!r} is not a string")
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f'trainer state "{key}": expected a numpy array, got {type(value).__name__}')

    def count(key: str) -> int:
        value = _scalar(state, key)
        if value.dtype.kind not in "iu" or int(value) < 0:
            raise CheckpointError(f'trainer state "{key}": expected a non-negative integer, got {value.dtype} {value}')
        return int(value)

    schedule_step, adam_step = count(SCHEDULE_STEP), count(ADAM_STEP)
    if adam_step > schedule_step:
        raise CheckpointError(f'trainer state: "{ADAM_STEP}" ({adam_step}) exceeds "{SCHEDULE_STEP}" '
                              f"({schedule_step}): more updates applied than steps taken")
    loss_scale = None
    if loss_scaled:
        scale = _scalar(state, LOSS_SCALE)
        if scale.dtype.kind != "f" or not np.isfinite(scale) or float(scale) <= 0:
            raise CheckpointError(f'trainer state "{LOSS_SCALE}": expected a positive float, got {scale.dtype} {scale}')
        loss_scale = (float(scale), count(LOSS_SCALE_GOOD_STEPS), count(LOSS_SCALE_SKIPPED_STEPS))
    elif any(k in state for k in LOSS_SCALE_KEYS):
        raise CheckpointError(f'trainer state has "{LOSS_SCALE}" but this trainer does not scale the loss '
                              "(TrainSpec.initial_loss_scale is None)")

    moments: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    own_rng = rng_key(backend) + "."
    rng: dict[str, np.ndarray] = {}
    known = {SCHEDULE_STEP, ADAM_STEP, *(LOSS_SCALE_KEYS if loss_scaled else ())}
    for key, value in state.items():
        if key in known:
            continue
        if key.startswith(RNG):
            if key.startswith(own_rng):
                rng[key] = value
            continue
        prefix = EXP_AVG if key.startswith(EXP_AVG) else EXP_AVG_SQ if key.startswith(EXP_AVG_SQ) else None
        if prefix is None:
            raise CheckpointError(f'trainer state: unknown key "{key}" (expected {EXP_AVG}<name>, {EXP_AVG_SQ}<name>, '
                                  f'{", ".join(sorted(known))} or {RNG}<backend>.*)')
        name = key[len(prefix):]
        if name not in parameters:
            raise CheckpointError(f'trainer state "{key}": "{name}" is not a parameter this trainer updates'
                                  f"{did_you_mean(name, parameters)}")
        other = (EXP_AVG_SQ if prefix == EXP_AVG else EXP_AVG) + name
        if other not in state:
            raise CheckpointError(f'trainer state has "{key}" but no "{other}"')
        expected = tuple(parameters[name])
        if value.shape != expected:
            raise CheckpointError(f'trainer state "{key}": shape {value.shape}, but parameter "{name}" is {expected}')
        if value.dtype != np.float32:
            raise CheckpointError(f'trainer state "{key}": dtype {value.dtype}, expected float32')
        if prefix == EXP_AVG:
            moments[name] = (value, state[other])
    if moments and adam_step == 0:
        raise CheckpointError(f'trainer state has Adam moments but "{ADAM_STEP}" is 0 (no update applied)')
    return TrainerState(schedule_step, adam_step, moments, loss_scale, rng)


def _scalar(state: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in state:
        raise CheckpointError(f'trainer state has no "{key}"')
    value = state[key]
    if value.shape != ():
        raise CheckpointError(f'trainer state "{key}": expected a scalar (0-d array), got shape {value.shape}')
    return value
