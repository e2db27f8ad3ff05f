"""Planning a run: resolve and check a whole recipe before a single step.

`plan()` resolves the backend, the device, the checkpoints, the data files, the model shapes and
every phase's loss graph, so bad input fails in seconds with one line naming the field or file.
`validate` runs only this step; `run` runs it first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from distill_engine.bert import BertConfig
from distill_engine.checkpoint import Checkpoint, load_any
from distill_engine.data import get_task
from distill_engine.data.glue import GlueTask
from distill_engine.device import Device
from distill_engine.errors import CheckpointError, RecipeError
from distill_engine.graph import DistillGraph, build_graph, build_mapping
from distill_engine.plugins import get_backend
from distill_engine.recipe import PhaseSpec, Recipe

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
    task: GlueTask | None
    vocab: Path
    phases: tuple[PhasePlan, ...]


def _losses_of(phase: PhaseSpec, task: GlueTask | None) -> list[tuple[str, float, float]]:
    if phase.losses:
        return [(loss.kind, loss.weight, loss.temperature) for loss in phase.losses]
    kinds = DEFAULT_LOSSES[phase.kind]
    if task is not None and task.is_regression and phase.kind in ("teacher_finetune", "task_distill_prediction"):
        kinds = ("mse",)  # TinyBERT: regression tasks train the prediction layer against gold scores
    return [(kind, 1.0, 1.0) for kind in kinds]


def _need_file(path: str, field: str, why: str) -> None:
    if not path:
        raise RecipeError(f"{field} is empty, and {why}")
    if not Path(path).is_file():
        raise RecipeError(f"{field}: file not found: {path}")


def plan(recipe: Recipe, backend_name: str) -> Plan:
    """Resolve and check a recipe; every failure is a DistillError naming the field or file."""
    backend = get_backend(backend_name)
    device = Device.parse(recipe.run.device)
    backend.check_device(device)

    if not recipe.teacher.path:
        raise RecipeError("teacher.path is empty: point it at a BERT checkpoint directory")
    if not Path(recipe.teacher.path).exists():
        raise CheckpointError(f"teacher.path: checkpoint not found: {recipe.teacher.path}")
    teacher = load_any(Path(recipe.teacher.path), recipe.teacher.format)

    data = recipe.data
    task = get_task(data.task) if data.task else None
    num_labels = task.num_labels if task else 0
    vocab = Path(data.vocab) if data.vocab else teacher.vocab
    if vocab is None or not vocab.is_file():
        raise RecipeError(f"data.vocab: no vocab.txt given and none beside the teacher ({recipe.teacher.path})")

    teacher_config = teacher.config
    if num_labels and teacher_config.num_labels not in (0, num_labels):
        raise CheckpointError(f"teacher.path: the teacher's head has {teacher_config.num_labels} labels, "
                              f"task {task.name} has {num_labels}")
    teacher_config = attrs.evolve(teacher_config, num_labels=num_labels or teacher_config.num_labels)
    if recipe.teacher.dropout is not None:
        teacher_config = attrs.evolve(teacher_config, hidden_dropout_prob=recipe.teacher.dropout)
    if recipe.teacher.attention_dropout is not None:
        teacher_config = attrs.evolve(teacher_config, attention_probs_dropout_prob=recipe.teacher.attention_dropout)

    s = recipe.student
    for field, value in (("teacher.dropout", recipe.teacher.dropout),
                         ("teacher.attention_dropout", recipe.teacher.attention_dropout),
                         ("student.dropout", s.dropout), ("student.attention_dropout", s.attention_dropout)):
        if value is not None and not 0.0 <= value < 1.0:
            raise RecipeError(f"{field}: {value} is not a dropout probability (0 <= p < 1)")
    student_init = None
    if s.init != "random":
        if not Path(s.init).exists():
            raise CheckpointError(f"student.init: checkpoint not found: {s.init}")
        student_init = load_any(Path(s.init), s.format)
        base = student_init.config
    else:
        base = BertConfig(vocab_size=teacher_config.vocab_size, hidden_size=s.hidden_size,
                          num_hidden_layers=s.layers, num_attention_heads=s.heads,
                          intermediate_size=s.intermediate_size,
                          max_position_embeddings=teacher_config.max_position_embeddings,
                          type_vocab_size=teacher_config.type_vocab_size,
                          layer_norm_eps=teacher_config.layer_norm_eps, hidden_act=s.hidden_act)
    student_config = attrs.evolve(
        base, hidden_dropout_prob=s.dropout, attention_probs_dropout_prob=s.attention_dropout,
        num_labels=num_labels, projection=s.projection,
        projection_dim=teacher_config.hidden_size if s.projection != "none" else 0)
    if student_config.vocab_size != teacher_config.vocab_size:
        raise RecipeError(f"student vocab ({student_config.vocab_size}) differs from the teacher's "
                          f"({teacher_config.vocab_size}): they must read the same token ids")
    if data.max_seq_length > min(student_config.max_position_embeddings, teacher_config.max_position_embeddings):
        raise RecipeError(f"data.max_seq_length {data.max_seq_length} exceeds the models' "
                          f"{min(student_config.max_position_embeddings, teacher_config.max_position_embeddings)} positions")

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
        where = f"phases[{i}] ({phase.name})"
        if phase.name in names:
            raise RecipeError(f"{where}.name: duplicate phase name")
        if phase.student_from not in ("previous", "init", *names):
            raise RecipeError(f'{where}.student_from: "{phase.student_from}" is not "previous", "init" or an earlier '
                              f"phase ({', '.join(names) or 'none'})")
        names.append(phase.name)
        needs_task = phase.kind != "general_distill"
        if needs_task and task is None:
            raise RecipeError(f"{where}: a {phase.kind} phase needs data.task (a GLUE task name)")
        if phase.data == "corpus":
            _need_file(data.corpus, "data.corpus", f"{where} reads the corpus")
        else:
            _need_file(getattr(data, phase.data), f"data.{phase.data}", f"{where} reads it")
        if phase.eval_every or phase.kind == "evaluate":
            _need_file(data.dev, "data.dev", f"{where} evaluates on it")
        if phase.batch_size < 1 or phase.epochs <= 0 and phase.max_steps <= 0:
            raise RecipeError(f"{where}: batch_size must be >= 1 and epochs or max_steps > 0")
        if phase.kind == "evaluate":
            if phase.losses:
                raise RecipeError(f"{where}.losses: an evaluate phase trains nothing")
            if phase.target == "student" and not student_exists:
                raise RecipeError(f"{where}: no student to evaluate yet (train one first or set student.init)")
            phases.append(PhasePlan(i, phase, None, where))
            continue
        student_exists = student_exists or phase.kind != "teacher_finetune"
        losses = _losses_of(phase, task)
        if phase.kind == "teacher_finetune":
            graph = build_graph(losses, teacher_config, None, None, where=where)
            teacher_has_head = True
        else:
            mapping = build_mapping(phase.mapping.strategy, student_config.num_hidden_layers,
                                    teacher_config.num_hidden_layers, phase.mapping.layers, where=f"{where}.mapping")
            graph = build_graph(losses, student_config, teacher_config, mapping, where=where)
            if any(t.kind == "soft_cross_entropy" for t in graph.terms) and not teacher_has_head:
                raise RecipeError(f"{where}: soft_cross_entropy needs the teacher's logits, but the teacher "
                                  f"({recipe.teacher.path}) has no classification head; add a teacher_finetune "
                                  "phase before it or use a fine-tuned teacher checkpoint")
        phases.append(PhasePlan(i, phase, graph, where))
    return Plan(recipe, backend, device, teacher, teacher_config, student_config, student_init, task, vocab,
                tuple(phases))
