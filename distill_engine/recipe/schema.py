"""The recipe schema: frozen attrs classes, one per TOML table. Field docs are the user's reference.

A recipe is data: the teacher, the student's shape, the data files, the run settings and an
ordered list of phases. Every field has a default taken from ../shared/TINYBERT.md (the PyTorch
original unless noted), so a recipe only writes what it changes.

Every number has a range (the comment after `# range:`, and `distill_engine.recipe.fields.Range`
on the field, which is what is checked); nan and inf are never accepted. A value outside is one
line naming the dotted path and the range. The ranges' upper ends are guards against typos and
overflow, far above any real TinyBERT setting. docs/recipe-reference.md lists every field.
"""

from __future__ import annotations

from typing import Literal

import attrs

from distill_engine.bert import ACTIVATIONS, ProjectionMode
from distill_engine.data.tasks import Task, get_task
from distill_engine.device import Device
from distill_engine.errors import FieldError, RecipeError
from distill_engine.optim import ClipMode, ScheduleKind
from distill_engine.precision import Precision
from distill_engine.recipe.fields import INT32_MAX, no_nul, not_empty, number, numbers, one_of, parses, phase_name

PhaseKind = Literal["teacher_finetune", "general_distill", "task_distill_intermediate",
                    "task_distill_prediction", "evaluate"]
PHASE_KINDS: tuple[str, ...] = PhaseKind.__args__  # type: ignore[attr-defined]
MAX_STEPS = 100_000_000  # a phase's steps, however they are counted (its schedule is an array of them)
LossName = Literal["attention_mse", "embedding_mse", "hidden_mse", "soft_cross_entropy",
                   "hard_cross_entropy", "mse"]
CheckpointFormat = Literal["huggingface", "neutral", "mindspore"]

# Fields holding input paths: relative values in a recipe file are resolved against the
# recipe's folder, relative values given with --set against the working directory.
INPUT_PATH_FIELDS = ("teacher.path", "student.init", "data.train", "data.dev", "data.test",
                     "data.corpus", "data.vocab", "augment.glove", "augment.mlm", "augment.mlm_vocab")


def _path(default: str = ""):
    """A path: any string without NUL; relative ones are resolved as INPUT_PATH_FIELDS says."""
    return attrs.field(default=default, validator=no_nul)


_check_task = parses(get_task, "task")


def _task(instance, attribute, value: str | Task) -> None:
    if isinstance(value, str) and value:  # empty: no task (general distillation); a Task checked itself
        _check_task(instance, attribute, value)


@attrs.frozen
class RunSpec:
    seed: int = number(42, 0, 2**32 - 1)  # range: 0..2^32-1 (numpy and every framework accept it)
    # relative to the working directory; not empty
    output_dir: str = attrs.field(default="runs/tinybert", validator=[not_empty, no_nul])
    # "cpu", "gpu:0", "ascend:0" (checked when the recipe is read; the backend says what it serves)
    device: str = attrs.field(default="cpu", validator=parses(Device.parse, "device"))
    log_every: int = number(10, 1, INT32_MAX)  # steps between loss records in metrics.jsonl; range: 1..2^31-1
    eval_batch_size: int = number(128, 1, 65536)  # range: 1..65536
    # Run-state checkpoints (for `run --resume`) during every training phase: every N steps and/or
    # every M minutes of wall time (0 turns either off), plus one at each phase end. The last
    # `keep_states` are kept. A state of the SST-2 recipe's student is a few hundred MB: every
    # 15 minutes costs well under 1 % of an hours-long run.
    checkpoint_every: int = number(0, 0, INT32_MAX)  # range: 0 (off) .. 2^31-1
    checkpoint_minutes: float = number(15.0, 0.0, 1e6)  # range: 0 (off) .. 1e6
    keep_states: int = number(3, 1, 1000)  # range: 1..1000
    # Divergence guard: a training loss above divergence_factor x the phase's starting loss (the
    # median of its first 10 steps) stops the run, as does any loss term above 1e6 (absurd from
    # the first step on, e.g. against a collapsed teacher: training.MAX_LOSS_TERM) and a
    # non-finite loss; 0 turns the first two checks off (non-finite losses always stop it). A
    # factor <= 1 would stop every run.
    divergence_factor: float = number(1000.0, 1.0, lo_open=True, off=True)  # range: 0 (off) or > 1
    # The teacher-output cache of phases with teacher_cache = "auto" (distill_engine.teacher_cache):
    # where its entries live, shared by every run ("": $DISTILL_ENGINE_CACHE, else
    # ~/.cache/distill-engine/teacher-outputs), and how values are stored (float16: half the disk)
    cache_dir: str = attrs.field(default="", validator=no_nul)
    cache_dtype: Literal["float16", "float32"] = "float16"
    # What training computes in (distill_engine.precision): "fp32"; "bf16" (bfloat16 forwards,
    # float32 losses, weights and AdamW); "fp16" (float16 forwards with dynamic loss scaling from
    # the phase's loss_scale, or 2^16). The backend must serve it on run.device (plan() says which
    # it serves); evaluation always runs in float32.
    precision: Precision = "fp32"
    # false (the default): the [PAD] token's row of the word embeddings gets no gradient, as in the
    # PyTorch original and Hugging Face BERT (nn.Embedding's padding_idx; the row is the models'
    # pad_token_id). true trains it like any other row (what runs did before this field existed).
    # Weight decay shrinks the row either way, as in the original.
    train_pad_embedding: bool = False
    # TensorBoard event files in <output_dir>/tensorboard/ (tensorboardX, the extra "tensorboard"):
    # each loss term, the learning rate and every dev metric against the run's global step; rank 0
    # alone writes them. metrics.jsonl is written either way.
    tensorboard: bool = False
    # Run-wide caps that make any recipe small (`run`/`validate --max-steps N --max-examples N` set
    # them): > 0 caps every training phase's steps (as each phase's max_steps does: the schedule
    # spans the capped steps), and every split's examples: what each phase trains on (train,
    # train_aug, corpus sequences), the dev split it is evaluated on, and augment's input. A phase's
    # own cap that is smaller wins. data.test is never cut (a submission holds every row).
    # range: 0 (off) .. 10^8 steps, 0 (off) .. 2^31-1 examples
    max_steps: int = number(0, 0, MAX_STEPS)
    max_examples: int = number(0, 0, INT32_MAX)
    # A checkpoint field (teacher.path, student.init, augment.mlm) may name a Hugging Face Hub model
    # ("bert-base-uncased", "org/name") when it is no local path: it is read from the local Hugging
    # Face cache (HF_HUB_CACHE / HF_HOME; distill_engine.hub). true: a model not in the cache is
    # downloaded into it (online only: never with HF_HUB_OFFLINE set); false: nothing is downloaded.
    hub_download: bool = False


@attrs.frozen
class TeacherSpec:
    path: str = _path()  # a checkpoint directory (Hugging Face or neutral) or a MindSpore .ckpt file
    format: CheckpointFormat = "huggingface"
    # Dropout while the teacher is fine-tuned; unset = the checkpoint's own config (0.1 for BERT).
    # (Its forward for distillation never drops out.) 0 here and in the student makes a run
    # deterministic: the same numbers on every backend, up to float32 rounding.
    dropout: float | None = number(None, 0.0, 1.0, hi_open=True)  # range: 0 <= p < 1
    attention_dropout: float | None = number(None, 0.0, 1.0, hi_open=True)  # range: 0 <= p < 1
    # The classifier head's input, when the teacher has or gets one: "none" = classifier(pooled),
    # Hugging Face's BertForSequenceClassification (the default); "relu" = classifier(relu(pooled)),
    # TinyBERT's original head (recipes/tinybert_original.toml). It builds the head teacher_finetune
    # adds to a checkpoint without one; a checkpoint whose head states the other activation is
    # refused (a Hugging Face config.json without "classifier_activation" is read as "none").
    # The default was "relu" before: a run started then resumes with "relu" (recipe.loader.CHANGED_DEFAULTS).
    classifier_activation: Literal["relu", "none"] = "none"


@attrs.frozen
class StudentSpec:
    # "random", or a checkpoint directory/file to start from (whose config then decides the
    # shape: layers..intermediate_size below are read only for "random"); not empty
    init: str = attrs.field(default="random", validator=[not_empty, no_nul])
    format: CheckpointFormat = "neutral"  # format of `init` when it is a path
    layers: int = number(4, 1, 256)  # range: 1..256 (and at most the teacher's layers to distill)
    hidden_size: int = number(312, 1, 32768)  # range: 1..32768, divisible by heads
    heads: int = number(12, 1, 1024)  # range: 1..1024, divides hidden_size
    intermediate_size: int = number(1200, 1, 131072)  # range: 1..131072
    hidden_act: str = attrs.field(default="gelu", validator=one_of(ACTIVATIONS))  # "gelu", "gelu_new", "relu"
    dropout: float = number(0.1, 0.0, 1.0, hi_open=True)  # range: 0 <= p < 1
    attention_dropout: float = number(0.1, 0.0, 1.0, hi_open=True)  # range: 0 <= p < 1
    # TinyBERT's fit_dense to the teacher's width (bert.BertConfig): "shared", one for every
    # hidden-state entry (the original PyTorch code); "paper", one W_e for the embeddings and one
    # W_h shared by the layers (the paper); "per_entry", one per entry; "none" (equal widths)
    projection: ProjectionMode = "shared"
    # The classifier head's input: "none" = classifier(pooled), Hugging Face's
    # BertForSequenceClassification (the default: only such a student exports to Hugging Face,
    # `distill-engine export --to huggingface`); "relu" = classifier(relu(pooled)), TinyBERT's
    # original head (recipes/tinybert_original.toml, MindSpore-zoo students). A `student.init`
    # whose head states the other activation is refused. The default was "relu" before: a run
    # started then resumes with "relu" (recipe.loader.CHANGED_DEFAULTS).
    classifier_activation: Literal["relu", "none"] = "none"
    # A student initialised from its teacher's layers (any family): the 1-based teacher layers it
    # takes, in order (DistilBERT's initialisation: every other layer, [1, 3, 5, ...]; Patient-KD's:
    # the first k, [1, 2, ..., k]), with the teacher's embeddings and pooler; its shape is then the
    # teacher's with that many layers (layers..intermediate_size above are read only without it).
    # Empty: no such initialisation. Range of each: 1..256 (and at most the teacher's layers)
    teacher_layers: tuple[int, ...] = numbers((), 1, 256)

    def __attrs_post_init__(self) -> None:
        if self.teacher_layers and self.init != "random":
            raise FieldError("teacher_layers", f"the student starts from its teacher's layers, and student.init "
                                               f"names {self.init}; set one of the two")
        if self.hidden_size % self.heads:
            raise FieldError("heads", f"{self.heads} does not divide hidden_size {self.hidden_size} "
                                      "(each head gets hidden_size / heads dimensions)")


@attrs.frozen
class DataSpec:
    # The task: a preset's name ("sst2", "mnli", ...: `distill-engine tasks` lists them) or a table
    # defining one: { name, format ("tsv", "csv", "jsonl"), text_a, text_b, label, labels, metrics,
    # header } (distill_engine.data.tasks.Task); empty for general distillation
    task: str | Task = attrs.field(default="", validator=_task)
    train: str = _path()  # the task's files, in its format (test: read and checked when given)
    dev: str = _path()
    test: str = _path()
    corpus: str = _path()  # general-distillation text: one sentence per line, blank line between documents
    vocab: str = _path()  # WordPiece vocab.txt; default: the teacher's
    lowercase: bool = True
    # range: 3..8192 ([CLS] a [SEP] b [SEP] needs 3), and at most the models' positions
    max_seq_length: int = number(128, 3, 8192)
    # "max_length": every batch is max_seq_length long (TinyBERT's originals; losses averaged over
    # the fixed length). "longest": each batch is cut to its longest sequence rounded up to
    # pad_to_multiple_of, several times faster on short-sentence tasks such as SST-2.
    padding: Literal["max_length", "longest"] = "max_length"
    # How training batches are drawn. "fixed": each epoch a random permutation of the rows cut
    # into batches. "bucketed" (length-aware): each epoch the shuffled rows are cut into windows
    # of 50 batches (data.encoded.BUCKET_WINDOW), each window is sorted by length and cut into
    # batches, and the epoch's batches are shuffled; every batch is then cut to its longest
    # sequence rounded up to pad_to_multiple_of (whatever `padding` says), and evaluation runs
    # in length order (the metrics are those of the dev file's order). Deterministic for a seed
    # and epoch, the same on every backend. The default: on SST-2 a bucketed batch holds a third
    # of a fixed batch's tokens (README, Bucketed batches). "fixed" computes what runs did before
    # this field existed (and what the originals do).
    batching: Literal["fixed", "bucketed"] = "bucketed"
    # Batches cut to their longest sequence ("longest" padding, "bucketed" batching) are rounded
    # up to a multiple of this: larger means fewer distinct shapes (a compiled backend builds one
    # graph per shape), smaller means less padding; a cut batch is never longer than
    # max_seq_length; range: 1..8192
    pad_to_multiple_of: int = number(16, 1, 8192)


@attrs.frozen
class AugmentSpec:
    """TinyBERT's data augmentation of data.train (distill_engine.augment), read by a phase with
    data = "train_aug". Computed once, before the first phase, into the cache (or `output`), and
    reused by every run with the same inputs and settings."""

    glove: str = _path()  # word vectors in GloVe's text format (.txt or .txt.gz); required by "train_aug"
    glove_rows: int = number(100_000, 2, INT32_MAX)  # the most frequent rows searched; range: 2..2^31-1
    # a BERT with its masked-LM head (single-piece words take its predictions); empty: GloVe for
    # every word (README, Data augmentation: the deviation this is)
    mlm: str = _path()
    mlm_format: CheckpointFormat = "huggingface"
    mlm_vocab: str = _path()  # the masked LM's vocab.txt (default: beside it)
    # > 0 augments only the first N examples of data.train (the output holds them and their new
    # rows: a reduced run); range: 0 (all) .. 2^31-1
    max_examples: int = number(0, 0, INT32_MAX)
    n: int = number(0, 0, 10_000)  # draws per text; 0: the paper's per task (SST-2, QNLI 20; MNLI, QQP 10; others 30)
    p: float = number(0.4, 0.0, 1.0)  # probability of replacing each eligible word; range: 0..1
    k: int = number(15, 1, 10_000)  # candidates per word; range: 1..10000
    seed: int = number(42, 0, 2**32 - 1)  # seed of the draws; range: 0..2^32-1
    # the augmented file (relative to the working directory); empty: in run.cache_dir's
    # augmented/<digest of the inputs and settings>/
    output: str = attrs.field(default="", validator=no_nul)
    batch_size: int = number(64, 1, 65536)  # masked-LM queries per forward; range: 1..65536


@attrs.frozen
class MappingSpec:
    # "uniform" (TinyBERT's g(j) = round_half_up(j*N/M)), "top" / "bottom" (the teacher's last /
    # first M layers: TinyBERT's Table 5 ablations), "last" (the student's last layer to the
    # teacher's last: MiniLM), "explicit" (the teacher layer of each student layer, in `layers`)
    strategy: Literal["uniform", "top", "bottom", "last", "explicit"] = "uniform"
    # with "explicit": the 1-based teacher layer of each student layer; range of each: 1..256
    # (and at most the teacher's layers)
    layers: tuple[int, ...] = numbers((), 1, 256)


def _loss_kind(instance, attribute, value: str) -> None:
    from distill_engine.losses import get_loss

    try:
        get_loss(value, "kind")
    except RecipeError as exc:
        raise FieldError("kind", str(exc).removeprefix("kind: ")) from None


LOSS_FIELDS = ("kind", "weight", "mapping")


@attrs.frozen
class LossSpec:
    """One term of a phase's objective. Its kind's parameters are written in the same table
    (`temperature = 2.0`); `distill-engine losses` lists the kinds, their parameters and formulas."""

    kind: str = attrs.field(validator=_loss_kind)  # a registered loss kind (`distill-engine losses`)
    weight: float = number(1.0, 0.0, 1e6)  # range: 0..1e6 (0 computes and logs the loss, trains nothing on it)
    # this term's own layer mapping (default: the kind's own, e.g. "last" for the MiniLM losses,
    # else the phase's `mapping`)
    mapping: MappingSpec | None = None
    # the kind's parameters by name, e.g. {temperature = 2.0}: written in the loss's table itself
    params: dict = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        from distill_engine.errors import did_you_mean
        from distill_engine.losses import get_loss

        definition = get_loss(self.kind)
        for name, value in self.params.items():
            param = definition.param(name)
            if param is None:
                known = [p.name for p in definition.params]
                raise FieldError(name, f"unknown key{did_you_mean(name, known + list(LOSS_FIELDS))}; loss "
                                       f"{self.kind} has {'parameters ' + ', '.join(known) if known else 'no parameters'}"
                                       f" beside the keys {', '.join(LOSS_FIELDS)}")
            try:
                param.check(value, name)
            except RecipeError as exc:
                raise FieldError(name, str(exc).removeprefix(f"{name}: ")) from None

    def resolved_params(self) -> dict:
        """Every parameter of the kind, the table's values over the defaults (as recipe.json holds them)."""
        from distill_engine.losses import get_loss

        return {p.name: self.params.get(p.name, p.default) for p in get_loss(self.kind).params}


@attrs.frozen
class OptimizerConfig:
    lr: float = number(5e-5, 0.0, 1.0, lo_open=True)  # range: 0 < lr <= 1
    betas: tuple[float, float] = numbers((0.9, 0.999), 0.0, 1.0, hi_open=True)  # two values, each 0 <= b < 1
    eps: float = number(1e-6, 0.0, 1.0, lo_open=True)  # range: 0 < eps <= 1
    weight_decay: float = number(0.01, 0.0, 1.0)  # range: 0..1 (decoupled, AdamW)
    clip: ClipMode = "per_parameter"  # PyTorch original; MindSpore's zoo uses "global_norm"
    max_grad_norm: float = number(1.0, 0.0, 1e6, lo_open=True)  # range: 0 < norm <= 1e6
    # true: Adam's moments are bias-corrected (torch.optim.AdamW); false: the PyTorch original's
    # BertAdam, which has no bias correction (its first updates are ~3.2x larger; optim.OptimizerSpec)
    bias_correction: bool = True


@attrs.frozen
class ScheduleConfig:
    kind: ScheduleKind = "linear"
    warmup_fraction: float = number(0.1, 0.0, 1.0)  # range: 0..1 of the phase's steps
    power: float = number(1.0, 0.0, 100.0, lo_open=True)  # range: 0 < power <= 100 ("polynomial")
    end_lr_fraction: float = number(0.0, 0.0, 1.0)  # range: 0..1 of lr




@attrs.frozen
class PhaseSpec:
    # 1-64 letters, digits, "_" or "-" (not first): it names the phase's folder in the run
    # directory; "state" is reserved; unique within the recipe
    name: str = attrs.field(validator=phase_name)
    kind: PhaseKind
    # what it trains on: data.train, data.dev, the corpus, or data.train augmented ([augment])
    data: Literal["train", "dev", "corpus", "train_aug"] = "train"
    losses: tuple[LossSpec, ...] = ()
    mapping: MappingSpec = MappingSpec()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    # passes over the data (fractions allowed); range: 0..10000; a training phase needs epochs or
    # max_steps > 0
    epochs: float = number(1.0, 0.0, 1e4)
    max_steps: int = number(0, 0, MAX_STEPS)  # > 0 caps the number of steps; range: 0..10^8
    batch_size: int = number(32, 1, 65536)  # range: 1..65536
    drop_last: bool = False  # drop an epoch's last partial batch (MindSpore zoo: drop_remainder=True)
    # > 0 uses only the first N examples (corpus: sequences); range: 0..2^31-1
    max_examples: int = number(0, 0, INT32_MAX)
    # > 0 evaluates on dev every N steps (and at the end); 0: at the end only; range: 0..2^31-1
    eval_every: int = number(0, 0, INT32_MAX)
    keep_best: bool = True  # hand the best-evaluated weights to the next phase
    # > 0: early stopping. The phase ends when its dev metric (the task's first) has not improved on
    # its best for this many evaluations in a row (evaluations every eval_every steps, which must be
    # > 0; only a phase that trains the prediction layer: teacher_finetune, task_distill_prediction).
    # The stop is logged ("early_stop" in metrics.jsonl) and shown in the report; the schedule is
    # the planned one, cut short. 0: off; range: 0..2^31-1
    early_stopping_patience: int = number(0, 0, INT32_MAX)
    student_from: str = "previous"  # "previous", "init" (student.init), or an earlier phase's name
    target: Literal["student", "teacher"] = "student"  # what an "evaluate" phase evaluates
    # > 0: dynamic loss scaling from this scale (run.precision = "fp16" scales from 2^16 when this
    # is 0; in "fp32" and "bf16" scaling changes nothing but what overflows); range: 0 (off) or 1..2^32
    loss_scale: float = number(0.0, 1.0, 2.0**32, off=True)
    loss_scale_window: int = number(1000, 1, INT32_MAX)  # steps between scale increases; range: 1..2^31-1
    # true: attention_mse, embedding_mse and hidden_mse average over real token positions only,
    # so a loss does not depend on how far its batch is padded (graph.losses.MASKED_FORMULA);
    # false: over every position, padding included (the PyTorch original, at fixed length)
    mask_padding: bool = False
    # "auto": a frozen teacher's outputs come from the teacher-output cache, computed once (needs
    # mask_padding = true when the losses compare positions); "off": the teacher runs every step
    teacher_cache: Literal["auto", "off"] = "auto"

    def __attrs_post_init__(self) -> None:
        if self.kind != "evaluate" and self.epochs == 0 and self.max_steps == 0:
            raise FieldError("epochs", "0 and max_steps 0: a training phase needs epochs > 0 or max_steps > 0")


@attrs.frozen
class Recipe:
    phases: tuple[PhaseSpec, ...]
    run: RunSpec = RunSpec()
    teacher: TeacherSpec = TeacherSpec()
    student: StudentSpec = StudentSpec()
    data: DataSpec = DataSpec()
    augment: AugmentSpec = AugmentSpec()

    def __attrs_post_init__(self) -> None:
        if not self.phases:
            raise FieldError("phases", "a recipe needs at least one [[phases]] table")
        seen: dict[str, int] = {}
        for i, phase in enumerate(self.phases):
            if phase.name in seen:
                raise FieldError(f"phases[{i}].name", f'duplicate phase name "{phase.name}" '
                                                      f"(phases[{seen[phase.name]}] has it too)")
            seen[phase.name] = i

    def phase(self, name: str) -> PhaseSpec:
        return next(p for p in self.phases if p.name == name)
