"""Planning a run: resolve and check a whole recipe before a single step.

`plan()` resolves the backend, the device, the checkpoints, the data files, the model shapes and
every phase's loss graph, so bad input fails in seconds with one line naming the field or file.
`validate` runs only this step; `run` runs it first.

What it checks beyond the recipe's own fields (ranges and names are the schema's):
- the backend serves the device, and `run.precision` on it (`Backend.precisions`);
- checkpoints (teacher, `student.init`): config.json / manifest.json readable and well-formed
  (types and ranges of every shape field), every tensor present with the config's shape (fresh
  heads and projections may be missing), no NaN/inf in any tensor;
- the vocab: UTF-8, the special tokens, no more entries than the teacher's embedding has rows;
- every data file a phase reads (and `data.test` when given), read once: UTF-8, header, columns,
  labels, rows with too few columns (named `file:line`), at least one example, labels where a
  loss or an evaluation needs them;
- every training phase has at least one step (and not absurdly many) on the data it reads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from distill_engine.bert import ACTIVATIONS, PROJECTION_MODES, BertConfig
from distill_engine.models.registry import family_of, parameter_shapes
from distill_engine.checkpoint import MANIFEST, Checkpoint, check_tensors, load_any
from distill_engine.data import Task, TaskExamples, num_batches, read_corpus_documents
from distill_engine.tasks.registry import resolve_task, task_type_of
from distill_engine import teacher_cache
from distill_engine.augment.recipe import AUGMENTED_SPLIT
from distill_engine.augment.recipe import job_of as augment_job_of
from distill_engine.backend import TrainSpec
from distill_engine.data.tokenizer import check_vocab
from distill_engine.device import Device
from distill_engine.distributed import SINGLE, check_global_batches
from distill_engine.errors import CheckpointError, DataError, DistillError, FieldError, RecipeError
from distill_engine.hub import resolve_hub_names
from distill_engine.graph import DistillGraph, LossRequest, build_graph, build_mapping
from distill_engine.losses import has_implementation, missing_message
from distill_engine.optim import OptimizerSpec, ScheduleSpec, learning_rates
from distill_engine.plugins import get_backend
from distill_engine.precision import check_precision
from distill_engine.tensorboard_log import check_available as check_tensorboard
from distill_engine.recipe import PhaseSpec, Recipe
from distill_engine.recipe.fields import smaller_cap
from distill_engine.recipe.schema import MAX_STEPS

DISTILL_KINDS = ("general_distill", "task_distill_intermediate", "task_distill_prediction")
DEFAULT_LOSSES = {
    "teacher_finetune": ("hard_cross_entropy",),
    "general_distill": ("attention_mse", "embedding_mse", "hidden_mse"),
    "task_distill_intermediate": ("attention_mse", "embedding_mse", "hidden_mse"),
    "task_distill_prediction": ("soft_cross_entropy",),
}


@attrs.frozen(eq=False)
class PhasePlan:
    index: int
    spec: PhaseSpec
    graph: DistillGraph | None  # None for "evaluate"
    where: str
    # whether the phase reads its teacher's outputs from the teacher-output cache; if not, why
    cached: bool = False
    cache_note: str = ""


@attrs.frozen(eq=False)
class Plan:
    """Everything resolved from a recipe before training: checked, ready to run."""

    recipe: Recipe
    backend: Any
    device: Device
    teacher: Checkpoint
    teacher_config: BertConfig  # with the task's head
    student_config: BertConfig
    student_init: Checkpoint | None
    task: Task | None
    vocab: Path
    phases: tuple[PhasePlan, ...]
    # What plan() read while checking the data files, for a runner that would rather not read
    # them twice: the task's examples by split ("train", "dev", "test") and the corpus' documents.
    # Optional: a runner may ignore them and read the files itself.
    examples: dict[str, TaskExamples] = attrs.field(factory=dict)
    corpus_documents: list[list[str]] | None = None
    # the processes of a data-parallel run (distill_engine.distributed); one process by default
    group: Any = SINGLE
    # the augmentation of data.train that phases with data = "train_aug" read (augment.job.AugmentJob)
    augment: Any = None

    @property
    def task_type(self) -> Any:
        """The registered type of `task` (`distill_engine.tasks.base.TaskType`); None without a task."""
        return None if self.task is None else task_type_of(self.task)


def _losses_of(phase: PhaseSpec, task: Task | None, student_layers: int, teacher_layers: int,
               where: str) -> list[LossRequest]:
    if phase.losses:
        return [LossRequest(loss.kind, loss.weight, loss.params,
                            None if loss.mapping is None else build_mapping(
                                loss.mapping.strategy, student_layers, teacher_layers, loss.mapping.layers,
                                where=f"{where}.losses[{i}].mapping"))
                for i, loss in enumerate(phase.losses)]
    kinds = (task_type_of(task).default_losses(task, phase.kind) if task is not None else None) \
        or DEFAULT_LOSSES[phase.kind]
    return [LossRequest(kind) for kind in kinds]


def _need_file(path: str, field: str, why: str) -> None:
    if not path:
        raise RecipeError(f"{field} is empty, and {why}")
    if Path(path).is_dir():
        raise RecipeError(f"{field}: {path} is a folder, expected a file")
    if not Path(path).is_file():
        raise RecipeError(f"{field}: file not found: {path}")


# --------------------------------------------------------------------------- checkpoints

# new heads and projections may be missing from a checkpoint: they are initialised fresh
FRESH_PREFIXES = ("classifier.", "qa_outputs.", "fit_dense")
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_POSITIVE = (*_REQUIRED, "max_position_embeddings")
_CHOICES = {"hidden_act": ACTIVATIONS, "projection": PROJECTION_MODES,
            "classifier_activation": ("relu", "none")}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_config_fields(doc: Any, source: str, *, required: tuple[str, ...] = _REQUIRED) -> None:
    """Check a model config (a config.json's or manifest's "config" object, or a loaded
    BertConfig as a dict) for what the engine reads from it: every shape a positive integer,
    probabilities in [0, 1), epsilons positive; one CheckpointError naming the key."""
    if not isinstance(doc, dict):
        raise CheckpointError(f"{source}: expected a JSON object, got {type(doc).__name__}")
    for key in required:
        if key not in doc:
            raise CheckpointError(f"{source}: no {key}")
    for key in _POSITIVE:
        if key in doc and not (_is_int(doc[key]) and 1 <= doc[key] <= 2**31 - 1):
            raise CheckpointError(f"{source}: {key} must be a positive integer, got {doc[key]!r}")
    for key in ("num_labels", "projection_dim", "pad_token_id", "type_vocab_size"):  # DistilBERT: 0 types
        if key == "pad_token_id" and doc.get(key) is None:
            continue  # absent or null (some Hugging Face configs): BERT's row 0 (BertConfig.from_hf_config)
        if key in doc and not (_is_int(doc[key]) and 0 <= doc[key] <= 2**31 - 1):
            raise CheckpointError(f"{source}: {key} must be an integer >= 0, got {doc[key]!r}")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if key in doc and not (_is_number(doc[key]) and 0 <= doc[key] < 1):
            raise CheckpointError(f"{source}: {key} must be a probability (0 <= p < 1), got {doc[key]!r}")
    for key, positive in (("layer_norm_eps", True), ("initializer_range", False)):
        value = doc.get(key, 1.0)
        if not (_is_number(value) and math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise CheckpointError(f"{source}: {key} must be a finite number {'>' if positive else '>='} 0, "
                                  f"got {value!r}")
    for key, choices in _CHOICES.items():
        if key in doc and (not isinstance(doc[key], str) or doc[key] not in choices):
            raise CheckpointError(f"{source}: {key} {doc[key]!r} is not one of {', '.join(choices)}")
    if "architectures" in doc and not (doc["architectures"] is None or isinstance(doc["architectures"], list)
                                       and all(isinstance(a, str) for a in doc["architectures"])):
        raise CheckpointError(f"{source}: architectures must be a list of class names, got {doc['architectures']!r}")
    if "id2label" in doc and not isinstance(doc["id2label"], dict):
        raise CheckpointError(f"{source}: id2label must be an object, got {doc['id2label']!r}")
    if _is_int(doc.get("pad_token_id")) and _is_int(doc.get("vocab_size")) and doc["pad_token_id"] >= doc["vocab_size"]:
        raise CheckpointError(f"{source}: pad_token_id {doc['pad_token_id']} is not below vocab_size {doc['vocab_size']}")
    if "hidden_size" in doc and "num_attention_heads" in doc and doc["hidden_size"] % doc["num_attention_heads"]:
        raise CheckpointError(f"{source}: hidden_size {doc['hidden_size']} is not divisible by "
                              f"num_attention_heads {doc['num_attention_heads']}")


def _read_json(path: Path) -> Any:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def _precheck(path: Path, fmt: str) -> None:
    """Read what load_any will read of a directory checkpoint and check it first, so a broken
    config.json / manifest.json is one line naming the key, not an exception from deep inside."""
    if fmt not in ("huggingface", "neutral"):
        return  # a plugin's format: its loader checks its own files; the config is checked after
    if path.is_file():
        hint = ' (a MindSpore .ckpt file needs format = "mindspore")' if path.suffix == ".ckpt" else ""
        raise CheckpointError(f"{path} is a file; a {fmt} checkpoint is a directory{hint}")
    if fmt == "huggingface":
        config_path = path / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{path}: no config.json")
        doc = _read_json(config_path)
        if isinstance(doc, dict):
            # the family of its model_type first (an unknown one is one line naming it), then its
            # fields under BERT's names (DistilBERT's dim, n_layers, ... read as hidden_size, ...)
            from distill_engine.models.registry import DEFAULT_FAMILY, family_for_model_type

            family = family_for_model_type(doc.get("model_type", DEFAULT_FAMILY), config_path)
            doc = getattr(family, "hf_fields", lambda d: d)(doc)
        check_config_fields(doc, str(config_path))
        return
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return  # load_neutral says what is missing
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict) or "config" not in manifest:
        raise CheckpointError(f"{manifest_path}: malformed manifest (no \"config\" object)")
    check_config_fields(manifest["config"], f"{manifest_path}: config")


def teacher_layers_checkpoint(teacher: Checkpoint, teacher_config: Any, layers: tuple[int, ...]) -> Checkpoint:
    """The student `student.teacher_layers` initialises: the teacher's config with len(layers)
    layers, and its state (embeddings, pooler, ...) with student layer i taken from teacher layer
    layers[i] (1-based); the teacher's head and projections are left for a fresh one. A layer the
    teacher lacks is one line naming the field."""
    count = teacher_config.num_hidden_layers
    missing = [layer for layer in layers if layer > count]
    if missing:
        raise RecipeError(f"student.teacher_layers: layer {missing[0]} is not one of the teacher's {count} layers "
                          f"(1..{count})")
    state = {}
    for name, value in teacher.state.items():
        if name.startswith(("classifier.", "qa_outputs.", "fit_dense")):
            continue
        if not name.startswith("encoder.layer."):
            state[name] = value
    for index, layer in enumerate(layers):
        prefix = f"encoder.layer.{layer - 1}."
        state.update({f"encoder.layer.{index}.{name[len(prefix):]}": value
                      for name, value in teacher.state.items() if name.startswith(prefix)})
    config = attrs.evolve(teacher_config, num_hidden_layers=len(layers), num_labels=0, projection="none",
                          projection_dim=0)
    return Checkpoint(config, state, {"init": f"teacher layers {list(layers)}"}, teacher.vocab)


def check_finite(state: dict[str, np.ndarray], source: str) -> None:
    """One line naming the first tensor holding NaN or inf: the checkpoint is damaged."""
    for name, value in state.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = int(arr.size - np.isfinite(arr).sum())
            raise CheckpointError(f"{source}: the checkpoint is damaged: tensor {name} holds {bad} NaN/inf "
                                  f"value{'s' if bad > 1 else ''} (of {arr.size}); it cannot be trained from")


def load_checkpoint(path: str, fmt: str, field: str) -> Checkpoint:
    """Load and check a checkpoint named by recipe field `field`; every failure names the field."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{field}: checkpoint not found: {path}")
    try:
        _precheck(p, fmt)
        ckpt = load_any(p, fmt)
        check_config_fields(attrs.asdict(ckpt.config), f"{path}: config")
    except DistillError as exc:
        raise CheckpointError(f"{field}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError, OSError) as exc:
        # a loader tripping over a malformed file: still one line naming the checkpoint
        raise CheckpointError(f"{field}: cannot read checkpoint {path} ({type(exc).__name__}: {exc})") from None
    return ckpt


def stated_head_activation(ckpt: Checkpoint, fmt: str, path: str) -> str | None:
    """The classifier activation a checkpoint's head was trained with, where its config states it:
    a neutral manifest (or a plugin's checkpoint whose manifest carries the engine's config), or a
    Hugging Face config.json with "classifier_activation" (as `export --to huggingface` writes);
    None when the checkpoint has no head or does not say."""
    if "classifier.weight" not in ckpt.state:
        return None
    if fmt == "huggingface":
        doc = _read_json(Path(path) / "config.json")
    else:
        doc = ckpt.manifest.get("config")
    value = doc.get("classifier_activation") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def _check_head_activation(ckpt: Checkpoint, fmt: str, path: str, table: str, wanted: str) -> None:
    """A head trained as classifier(relu(pooled)) is not one trained as classifier(pooled): the
    recipe's `<table>.classifier_activation` must be the one the checkpoint states."""
    stated = stated_head_activation(ckpt, fmt, path)
    if stated is not None and stated != wanted:
        field = "teacher.path" if table == "teacher" else "student.init"
        raise RecipeError(f'{table}.classifier_activation is "{wanted}", but the head of {field} ({path}) was '
                          f'trained with "{stated}"; set {table}.classifier_activation = "{stated}"')


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_state(config: BertConfig, ckpt: Checkpoint, field: str, path: str, config_file: str) -> None:
    """The checkpoint's tensors are what its config describes (`check_tensors`, as the runner
    checks them), summarised in one short line when they are not; and all finite."""
    source = f"{field} ({path})"
    try:
        check_tensors(config, ckpt.state, source, allow_missing=FRESH_PREFIXES)
    except CheckpointError:
        expected = parameter_shapes(config)
        state = ckpt.state
        missing = [k for k in expected if k not in state and not k.startswith(FRESH_PREFIXES)]
        extra = sorted(k for k in state if k not in expected)
        shapes = [k for k in expected if k in state and tuple(np.shape(state[k])) != expected[k]]
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} tensor{'s have' if len(shapes) > 1 else ' has'} another shape "
                         f"(e.g. {k} is {tuple(np.shape(state[k]))}, the config says {expected[k]})")
        if missing:
            parts.append(f"missing tensors: {_listed(missing)}")
        if extra:
            parts.append(f"unexpected tensors: {_listed(extra)}")
        if ckpt.config.projection != config.projection and any(k.startswith("fit_dense") for k in extra):
            parts.append(f'its projection is "{ckpt.config.projection}" and student.projection says '
                         f'"{config.projection}" (bert.BertConfig lists each mode\'s fit_dense tensors)')
        raise CheckpointError(f"{source}: {config_file} and the tensors disagree: " + "; ".join(parts)) from None
    check_finite(ckpt.state, source)


def _config_file(fmt: str) -> str:
    return {"huggingface": "config.json", "neutral": MANIFEST}.get(fmt, "the config")


# --------------------------------------------------------------------------- data files


def _task_split(split: str, data, task: Task | None, where: str, cache: dict) -> TaskExamples:
    """Read data.<split> once; every problem names the field and file (and line)."""
    if split in cache:
        return cache[split]
    path = getattr(data, split)
    if task is None:
        raise RecipeError(f"{where} reads data.{split}, a task file, which needs data.task (a task's name or "
                          "definition); "
                          'a corpus phase sets data = "corpus"')
    try:
        examples = task_type_of(task).read(Path(path), task)
    except DataError as exc:
        raise DataError(f"data.{split}: {exc}") from None
    if not len(examples):
        raise DataError(f"data.{split}: {path}: no examples (the file has no rows after its header)")
    cache[split] = examples
    return examples


def _corpus_rows_at_least(documents: list[list[str]], needed: int, vocab: Path, lowercase: bool,
                          max_length: int, family: Any = None) -> bool:
    """Whether packing the corpus yields at least `needed` rows. Every document with a letter or
    digit packs into one row at least, so counting those is usually enough; only a corpus with
    fewer such documents is tokenised (and only as far as `needed` rows)."""
    count = 0
    for doc in documents:
        if any(ch.isalnum() for sentence in doc for ch in sentence):
            count += 1
            if count >= needed:
                return True
    from distill_engine.data import WordPieceTokenizer, pack_corpus

    # the teacher's family's tokenizer (RoBERTa's BPE), BERT's WordPiece without one
    tokenizer = (family.tokenizer(vocab, lowercase) if family is not None
                 else WordPieceTokenizer(vocab, lowercase=lowercase))
    packed = pack_corpus(documents, tokenizer, max_length, max_sequences=needed)
    return len(packed) >= needed


def capped(phase: PhaseSpec, run) -> PhaseSpec:
    """The phase under the run-wide caps `run.max_steps` and `run.max_examples` (`--max-steps`,
    `--max-examples`): they become the phase's own max_steps and max_examples where they are
    tighter, so everything downstream (step counts, schedules, the data a phase reads, the
    teacher-output cache) follows from the phase alone. An evaluate phase trains nothing: its
    dev split is cut by the runner."""
    if phase.kind == "evaluate" or not (run.max_steps or run.max_examples):
        return phase
    return attrs.evolve(phase, max_steps=smaller_cap(phase.max_steps, run.max_steps),
                        max_examples=smaller_cap(phase.max_examples, run.max_examples))


def phase_steps(n: int, phase: PhaseSpec) -> int:
    """The number of steps a training phase takes on `n` examples (the training loop runs exactly these)."""
    per_epoch = num_batches(n, phase.batch_size, drop_last=phase.drop_last)
    total = math.ceil(phase.epochs * per_epoch) if phase.epochs > 0 else phase.max_steps
    return min(total, phase.max_steps) if phase.max_steps > 0 else total


def train_spec(plan: Plan, phase: PhasePlan, steps: int) -> TrainSpec:
    """What the backend's trainer gets for a training phase of `steps` steps (`phase_steps` of the
    examples it reads): the graph, the optimiser, every step's learning rate, the seed, precision
    and loss scaling, and this process's place in a data-parallel run. plan() checks the step count
    where the data is known before the run (the task splits); the runner knows the corpus' packed
    rows and the augmented data's rows only once it has them, so the count is its to give."""
    spec, run = phase.spec, plan.recipe.run
    opt = spec.optimizer
    return TrainSpec(
        graph=phase.graph,
        optimizer=OptimizerSpec(lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay,
                                clip=opt.clip, max_grad_norm=opt.max_grad_norm, bias_correction=opt.bias_correction),
        learning_rates=learning_rates(ScheduleSpec(**attrs.asdict(spec.schedule)), opt.lr, steps),
        seed=run.seed + phase.index,
        loss_scale=spec.loss_scale or None, loss_scale_window=spec.loss_scale_window, precision=run.precision,
        world_size=plan.group.world_size, rank=plan.group.rank,
        freeze_pad_embedding=not run.train_pad_embedding)


def _no_steps(where: str, n: int, phase: PhaseSpec, source: str, run_cap: int = 0) -> RecipeError:
    why = (f"drop_last drops every batch of {phase.batch_size}" if phase.drop_last
           else f"epochs = {phase.epochs:g}")
    # a cap that came from the run (--max-examples) is raised there, not in the phase
    raise_what = (f"raise --max-examples (run.max_examples = {run_cap}) or epochs" if run_cap and
                  phase.max_examples == run_cap else "raise max_examples/epochs")
    return RecipeError(f"{where}: no training steps: {n} examples from {source} and {why}; "
                       f"lower batch_size, set drop_last = false or {raise_what}")


def rank_device(device: Device, group) -> Device:
    """The device of this rank: with several processes, accelerator k of the recipe's kind is the
    local rank's (gpu:0 in the recipe runs rank r on gpu:r of its machine); the cpu is shared."""
    if group.world_size > 1 and device.kind != "cpu":
        return Device(device.kind, group.local_rank)
    return device


def plan(recipe: Recipe, backend_name: str, group=None, world_size: int | None = None) -> Plan:
    """Resolve and check a recipe; every failure is a DistillError naming the field or file.

    `group`: this process's `distributed.ProcessGroup` (None: one process). `world_size`: check
    the recipe for that many processes without being one of them (`--nproc N` before it launches)."""
    # a model named the Hub way becomes its local snapshot's folder first: the plan, recipe.json
    # and the inputs' digests all read the files actually used
    recipe = resolve_hub_names(recipe)
    backend = get_backend(backend_name)
    group = SINGLE if group is None else group
    device = rank_device(Device.parse(recipe.run.device), group)
    backend.check_device(device)
    check_precision(backend, device, recipe.run.precision)
    check_tensorboard(recipe.run.tensorboard)

    if not recipe.teacher.path:
        raise RecipeError("teacher.path is empty: point it at a BERT checkpoint directory")
    teacher = load_checkpoint(recipe.teacher.path, recipe.teacher.format, "teacher.path")

    data = recipe.data
    # (a pad_to_multiple_of above max_seq_length is allowed: a cut batch is never longer than
    # max_seq_length, so short-sequence recipes keep the default bucketed batching)
    task = resolve_task(data.task)
    if task is not None and hasattr(task_type_of(task), "complete"):
        # a definition that takes something from the training file (a token task's tag set): the
        # completed one is the run's, so recipe.json (and a resume's comparison) records it
        try:
            completed = task_type_of(task).complete(task, Path(data.train) if data.train else None)
        except FieldError as exc:
            raise RecipeError(f"data.task.{exc}") from None
        except DataError as exc:
            raise DataError(f"data.train: {exc}") from None
        if completed is not task:
            task = completed
            recipe = attrs.evolve(recipe, data=attrs.evolve(data, task=task))
            data = recipe.data
    num_labels = task_type_of(task).num_outputs(task) if task else 0
    vocab = Path(data.vocab) if data.vocab else teacher.vocab
    if vocab is None or not vocab.is_file():
        if data.vocab:
            raise RecipeError(f"data.vocab: file not found: {data.vocab}")
        raise RecipeError(f"data.vocab: no vocab.txt given and none beside the teacher ({recipe.teacher.path})")
    vocab_field = "data.vocab" if data.vocab else "teacher.path"
    try:
        vocab_size = getattr(family_of(teacher.config), "check_vocab", check_vocab)(vocab)
    except DataError as exc:
        raise DataError(f"{vocab_field}: {exc}") from None
    if vocab_size > teacher.config.vocab_size:
        raise DataError(f"{vocab_field}: {vocab} has {vocab_size} tokens, more than the teacher's vocab_size "
                        f"{teacher.config.vocab_size}: token ids past {teacher.config.vocab_size - 1} would have "
                        "no embedding; use the teacher's own vocab.txt")

    teacher_config = teacher.config
    if num_labels and teacher_config.num_labels not in (0, num_labels):
        raise CheckpointError(f"teacher.path: the teacher's head has {teacher_config.num_labels} labels, "
                              f"task {task.name} has {num_labels}")
    # the head the task type's outputs come from (graph.taps.HEADS); a trained head of another kind
    # would be read as this one without a word (a token classifier has a sequence classifier's shape)
    head = task_type_of(task).head if task else teacher_config.head
    if task and teacher_config.num_labels and teacher_config.head != head:
        raise CheckpointError(f"teacher.path: the teacher's head is {teacher_config.head!r}, and task {task.name} "
                              f"(type {task_type_of(task).name}) reads a {head!r} head")
    teacher_config = attrs.evolve(teacher_config, num_labels=num_labels or teacher_config.num_labels,
                                  classifier_activation=recipe.teacher.classifier_activation, head=head)
    _check_head_activation(teacher, recipe.teacher.format, recipe.teacher.path, "teacher",
                           recipe.teacher.classifier_activation)
    if recipe.teacher.dropout is not None:
        teacher_config = attrs.evolve(teacher_config, hidden_dropout_prob=recipe.teacher.dropout)
    if recipe.teacher.attention_dropout is not None:
        teacher_config = attrs.evolve(teacher_config, attention_probs_dropout_prob=recipe.teacher.attention_dropout)

    _check_state(teacher_config, teacher, "teacher.path", recipe.teacher.path, _config_file(recipe.teacher.format))

    s = recipe.student  # dropouts, sizes and heads are checked by the schema
    student_init = None
    if s.init != "random":
        student_init = load_checkpoint(s.init, s.format, "student.init")
        base = student_init.config
        if family_of(base) is not family_of(teacher_config):
            # the losses compare the two models tap by tap and the student reads the teacher's token ids
            raise RecipeError(f"student.init: {s.init} is a {family_of(base).name} model and the teacher a "
                              f"{family_of(teacher_config).name} model; a student stays in its teacher's family")
    elif s.teacher_layers:
        student_init = teacher_layers_checkpoint(teacher, teacher_config, s.teacher_layers)
        base = student_init.config
    else:
        # a student of the teacher's family, vocabulary, positions and token types
        base = family_of(teacher_config).student_config(
            teacher_config, layers=s.layers, hidden_size=s.hidden_size, heads=s.heads,
            intermediate_size=s.intermediate_size, hidden_act=s.hidden_act)
    student_config = attrs.evolve(
        base, hidden_dropout_prob=s.dropout, attention_probs_dropout_prob=s.attention_dropout,
        num_labels=num_labels, projection=s.projection, classifier_activation=s.classifier_activation,
        head=teacher_config.head,
        projection_dim=teacher_config.hidden_size if s.projection != "none" else 0)
    if student_init is not None:
        _check_head_activation(student_init, s.format, s.init, "student", s.classifier_activation)
        _check_state(student_config, student_init, *(("student.teacher_layers", str(list(s.teacher_layers)))
                                                     if s.teacher_layers else ("student.init", s.init)),
                     _config_file(s.format))
    if student_config.vocab_size != teacher_config.vocab_size:
        raise RecipeError(f"student vocab ({student_config.vocab_size}) differs from the teacher's "
                          f"({teacher_config.vocab_size}): they must read the same token ids")
    if data.max_seq_length > min(student_config.max_sequence_length, teacher_config.max_sequence_length):
        raise RecipeError(f"data.max_seq_length {data.max_seq_length} exceeds the models' "
                          f"{min(student_config.max_sequence_length, teacher_config.max_sequence_length)} positions")

    examples_cache: dict[str, TaskExamples] = {}
    if data.test:  # no phase reads it, but a given file is checked like the others
        _need_file(data.test, "data.test", "")
        _task_split("test", data, task, "data.test", examples_cache)
    if task is not None and data.dev:  # the runner evaluates every phase on it when it is given
        _need_file(data.dev, "data.dev", "")
        if _task_split("dev", data, task, "data.dev", examples_cache).labels is None:
            raise DataError(f"data.dev: {data.dev} has no {task_type_of(task).label_source(task)} (an unlabelled split?); "
                            "phases are evaluated on it, which needs labels")
    corpus_documents: list[list[str]] | None = None

    names: list[str] = []
    phases = []
    if not getattr(backend, "trains", True):
        training = [p.name for p in recipe.phases if p.kind != "evaluate"]
        if training:
            raise RecipeError(f'backend "{backend.name}" only evaluates; phases {", ".join(training)} train '
                              "(use --backend torch or mindspore, or a recipe of evaluate phases)")
    teacher_has_head = teacher.config.num_labels > 0
    student_exists = student_init is not None
    for i, phase in enumerate(recipe.phases):
        phase = capped(phase, recipe.run)
        where = f"phases[{i}] ({phase.name})"
        if phase.student_from not in ("previous", "init", *names):
            raise RecipeError(f'{where}.student_from: "{phase.student_from}" is not "previous", "init" or an earlier '
                              f"phase ({', '.join(names) or 'none'})")
        names.append(phase.name)
        needs_task = phase.kind != "general_distill"
        if needs_task and task is None:
            raise RecipeError(f"{where}: a {phase.kind} phase needs data.task (a task's name or definition)")
        split = "train" if phase.data == AUGMENTED_SPLIT else phase.data  # augmented: data.train's examples and more
        if phase.data == "corpus":
            _need_file(data.corpus, "data.corpus", f"{where} reads the corpus")
        else:
            _need_file(getattr(data, split), f"data.{split}", f"{where} reads it"
                       + (" (augmented)" if split != phase.data else ""))
        if phase.eval_every and task is None:
            raise RecipeError(f"{where}.eval_every: evaluating needs data.task and data.dev; "
                              "set eval_every = 0 for a phase without a task")
        if phase.eval_every or phase.kind == "evaluate":
            _need_file(data.dev, "data.dev", f"{where} evaluates on it")  # (read and checked above)
        if phase.early_stopping_patience and phase.kind == "evaluate":
            raise RecipeError(f"{where}.early_stopping_patience: an evaluate phase trains nothing to stop; set it to 0")
        if phase.early_stopping_patience and not phase.eval_every:
            raise RecipeError(f"{where}.early_stopping_patience: {phase.early_stopping_patience} needs eval_every > 0 "
                              "(the dev metric it watches is computed every eval_every steps)")
        if phase.kind == "evaluate":
            if phase.losses:
                raise RecipeError(f"{where}.losses: an evaluate phase trains nothing")
            if phase.target == "student" and not student_exists:
                raise RecipeError(f"{where}: no student to evaluate yet (train one first or set student.init)")
            if phase.target == "teacher" and not teacher_has_head:
                raise RecipeError(f"{where}: the teacher has no classification head to evaluate yet "
                                  "(fine-tune it in a teacher_finetune phase first, or use a fine-tuned checkpoint)")
            phases.append(PhasePlan(i, phase, None, where))
            continue
        student_exists = student_exists or phase.kind != "teacher_finetune"
        losses = _losses_of(phase, task, student_config.num_hidden_layers, teacher_config.num_hidden_layers, where)
        if phase.kind == "teacher_finetune":
            graph = build_graph(losses, teacher_config, None, None, where=where)
            teacher_has_head = True
        else:
            mapping = build_mapping(phase.mapping.strategy, student_config.num_hidden_layers,
                                    teacher_config.num_hidden_layers, phase.mapping.layers, where=f"{where}.mapping")
            graph = build_graph(losses, student_config, teacher_config, mapping, where=where,
                                mask_padding=phase.mask_padding)
        if all(t.weight == 0 for t in graph.terms):
            raise RecipeError(f"{where}.losses: every loss has weight 0, so the phase would train nothing")
        if phase.early_stopping_patience and not graph.trains_logits:
            # its dev metric is that of a head it does not train (TD1's is chance): nothing to watch
            raise RecipeError(f"{where}.early_stopping_patience: a {phase.kind} phase does not train the prediction "
                              "layer, so its dev metric does not tell its progress; early stopping applies to "
                              "phases that do (teacher_finetune, task_distill_prediction)")
        if phase.eval_every and not graph.trains_logits:
            raise RecipeError(f"{where}.eval_every: this phase does not train the prediction layer, so it is not "
                              "evaluated (its dev metrics would score an untrained head); set eval_every = 0 and "
                              "score the student with an evaluate phase after a phase that trains it")
        for k, term in enumerate(graph.terms):
            if getattr(backend, "trains", True) and not has_implementation(term.kind, backend_name):
                raise RecipeError(f"{where}.losses[{k}].kind: " + missing_message(term.kind, backend_name))
        logit_kd = next((t.kind for t in graph.terms if t.definition.reads == "logits" and t.definition.needs_teacher),
                        None)
        if logit_kd and phase.kind != "teacher_finetune" and not teacher_has_head:
            raise RecipeError(f"{where}: {logit_kd} needs the teacher's logits, but the teacher "
                              f"({recipe.teacher.path}) has no classification head; add a teacher_finetune "
                              "phase before it or use a fine-tuned teacher checkpoint")
        # the data it trains on: read (once per file), labelled if a loss needs labels, and
        # enough of it for one step at least
        if phase.data == "corpus":
            if corpus_documents is None:
                try:
                    corpus_documents = read_corpus_documents(data.corpus)
                except DataError as exc:
                    raise DataError(f"data.corpus: {exc}") from None
                if not corpus_documents:
                    raise DataError(f"data.corpus: {data.corpus}: no text (the file is empty or only blank lines)")
            if graph.needs_labels:
                raise RecipeError(f"{where}: its losses need labels, and the corpus has none; "
                                  'train on data = "train" or drop the label losses')
            needed = phase.batch_size if phase.drop_last else 1
            if phase.max_examples and phase.max_examples < needed or not _corpus_rows_at_least(
                    corpus_documents, needed, vocab, data.lowercase, data.max_seq_length,
                    family_of(teacher_config)):
                raise _no_steps(where, phase.max_examples or len(corpus_documents), phase, "data.corpus",
                                recipe.run.max_examples)
            if phase.max_steps == 0 and phase_steps(min(len(corpus_documents), phase.max_examples or math.inf),
                                               phase) > MAX_STEPS:
                raise RecipeError(f"{where}: more than {MAX_STEPS:.0e} steps; lower epochs or set max_steps")
        else:
            examples = _task_split(split, data, task, where, examples_cache)
            if graph.needs_labels and examples.labels is None:
                raise DataError(f"{where}: its losses need labels, and data.{split} ({getattr(data, split)}) "
                                f"has no {task_type_of(task).label_source(task)} (an unlabelled split?)")
            n = min(len(examples), phase.max_examples) if phase.max_examples else len(examples)
            steps = phase_steps(n, phase)
            if steps < 1:
                raise _no_steps(where, n, phase, f"data.{split}", recipe.run.max_examples)
            if steps > MAX_STEPS:
                raise RecipeError(f"{where}: {steps} steps is more than {MAX_STEPS:.0e}; lower epochs or set max_steps")
        cached, why = teacher_cache.usable(graph, phase.teacher_cache)
        phases.append(PhasePlan(i, phase, graph, where, cached, why))
    check_global_batches(phases, world_size or group.world_size)
    augment = augment_job_of(recipe, task, backend_name)
    return Plan(recipe, backend, device, teacher, teacher_config, student_config, student_init, task, vocab,
                tuple(phases), examples=examples_cache, corpus_documents=corpus_documents, group=group,
                augment=augment)
