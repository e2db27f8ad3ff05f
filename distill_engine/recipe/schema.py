"""The recipe schema: frozen attrs classes, one per TOML table. Field docs are the user's reference.

A recipe is data: the teacher, the student's shape, the data files, the run settings and an
ordered list of phases. Every field has a default taken from ../shared/TINYBERT.md (the PyTorch
original unless noted), so a recipe only writes what it changes.
"""

from __future__ import annotations

from typing import Literal

import attrs

from distill_engine.optim import ClipMode, ScheduleKind

PhaseKind = Literal["teacher_finetune", "general_distill", "task_distill_intermediate",
                    "task_distill_prediction", "evaluate"]
PHASE_KINDS: tuple[str, ...] = PhaseKind.__args__  # type: ignore[attr-defined]
LossName = Literal["attention_mse", "embedding_mse", "hidden_mse", "soft_cross_entropy",
                   "hard_cross_entropy", "mse"]
CheckpointFormat = Literal["huggingface", "neutral", "mindspore"]

# Fields holding input paths: relative values in a recipe file are resolved against the
# recipe's folder, relative values given with --set against the working directory.
INPUT_PATH_FIELDS = ("teacher.path", "student.init", "data.train", "data.dev", "data.test",
                     "data.corpus", "data.vocab")


@attrs.frozen
class RunSpec:
    seed: int = 42
    output_dir: str = "runs/tinybert"  # relative to the working directory
    device: str = "cpu"  # "cpu", "gpu:0", "ascend:0"
    log_every: int = 10  # steps between loss records in metrics.jsonl
    eval_batch_size: int = 128
    # Run-state checkpoints (for `run --resume`) during every training phase: every N steps and/or
    # every M minutes of wall time (0 turns either off), plus one at each phase end. The last
    # `keep_states` are kept. A state of the SST-2 recipe's student is a few hundred MB: every
    # 15 minutes costs well under 1 % of an hours-long run.
    checkpoint_every: int = 0
    checkpoint_minutes: float = 15.0
    keep_states: int = 3
    # Divergence guard: a training loss above divergence_factor x the phase's starting loss (the
    # median of its first 10 steps) stops the run, as does a non-finite loss; 0 turns the
    # factor check off (non-finite losses always stop it).
    divergence_factor: float = 1000.0


@attrs.frozen
class TeacherSpec:
    path: str = ""  # a checkpoint directory (Hugging Face or neutral) or a MindSpore .ckpt file
    format: CheckpointFormat = "huggingface"
    # Dropout while the teacher is fine-tuned; unset = the checkpoint's own config (0.1 for BERT).
    # (Its forward for distillation never drops out.) 0 here and in the student makes a run
    # deterministic: the same numbers on every backend, up to float32 rounding.
    dropout: float | None = None
    attention_dropout: float | None = None


@attrs.frozen
class StudentSpec:
    init: str = "random"  # "random", or a checkpoint directory/file to start from
    format: CheckpointFormat = "neutral"  # format of `init` when it is a path
    layers: int = 4
    hidden_size: int = 312
    heads: int = 12
    intermediate_size: int = 1200
    hidden_act: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    projection: Literal["shared", "per_entry", "none"] = "shared"  # TinyBERT's fit_dense, see bert.py


@attrs.frozen
class DataSpec:
    task: str = ""  # GLUE task name ("sst2", "mnli", ...); empty for general distillation
    train: str = ""
    dev: str = ""
    test: str = ""
    corpus: str = ""  # general-distillation text: one sentence per line, blank line between documents
    vocab: str = ""  # WordPiece vocab.txt; default: the teacher's
    lowercase: bool = True
    max_seq_length: int = 128
    # "max_length": every batch is max_seq_length long (TinyBERT's originals; losses averaged over
    # the fixed length). "longest": each batch is cut to its longest sequence rounded up to 16,
    # several times faster on short-sentence tasks such as SST-2.
    padding: Literal["max_length", "longest"] = "max_length"


@attrs.frozen
class LossSpec:
    kind: LossName
    weight: float = 1.0
    temperature: float = 1.0


@attrs.frozen
class MappingSpec:
    strategy: Literal["uniform", "top", "bottom", "explicit"] = "uniform"
    layers: tuple[int, ...] = ()  # with "explicit": the 1-based teacher layer of each student layer


@attrs.frozen
class OptimizerConfig:
    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    weight_decay: float = 0.01
    clip: ClipMode = "per_parameter"  # PyTorch original; MindSpore's zoo uses "global_norm"
    max_grad_norm: float = 1.0


@attrs.frozen
class ScheduleConfig:
    kind: ScheduleKind = "linear"
    warmup_fraction: float = 0.1
    power: float = 1.0
    end_lr_fraction: float = 0.0


@attrs.frozen
class PhaseSpec:
    name: str
    kind: PhaseKind
    data: Literal["train", "dev", "corpus"] = "train"
    losses: tuple[LossSpec, ...] = ()
    mapping: MappingSpec = MappingSpec()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    epochs: float = 1.0
    max_steps: int = 0  # > 0 caps the number of steps
    batch_size: int = 32
    drop_last: bool = False  # drop an epoch's last partial batch (MindSpore zoo: drop_remainder=True)
    max_examples: int = 0  # > 0 uses only the first N examples (sequences for the corpus)
    eval_every: int = 0  # > 0 evaluates on dev every N steps (and at the end); 0: at the end only
    keep_best: bool = True  # hand the best-evaluated weights to the next phase
    student_from: str = "previous"  # "previous", "init" (student.init), or an earlier phase's name
    target: Literal["student", "teacher"] = "student"  # what an "evaluate" phase evaluates
    loss_scale: float = 0.0  # > 0: dynamic loss scaling from this scale (float16 on Ascend/GPU)
    loss_scale_window: int = 1000


@attrs.frozen
class Recipe:
    phases: tuple[PhaseSpec, ...]
    run: RunSpec = RunSpec()
    teacher: TeacherSpec = TeacherSpec()
    student: StudentSpec = StudentSpec()
    data: DataSpec = DataSpec()

    def phase(self, name: str) -> PhaseSpec:
        return next(p for p in self.phases if p.name == name)
