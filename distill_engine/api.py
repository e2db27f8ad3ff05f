"""The Python API: run a recipe, load any checkpoint to predict with, compute one phase's losses.

`import distill_engine` re-exports `run`, `load` and `phase_losses` lazily (nothing here is
imported until one is used, and no framework until a backend is). README, "Python API".
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill_engine.errors import DataError, RecipeError
from distill_engine.predict import Predictor, load

__all__ = ["load", "phase_losses", "run", "toml_value"]


def toml_value(value: Any) -> str:
    """A Python value (str, bool, int, float, list, dict) as the TOML text `--set` reads."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (str, Path)):  # JSON's escapes are TOML's, but TOML wants DEL escaped too
        return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise RecipeError(f"overrides: {value!r} ({type(value).__name__}) is not a TOML value "
                      "(str, bool, int, float, list or dict)")


def run(recipe, backend: str = "torch", overrides: Mapping[str, Any] | None = None, output_dir=None,
        resume: bool = False, overwrite: bool = False, progress: bool = False) -> list[dict]:
    """Run every phase of a recipe (a .toml path or a `Recipe`) on `backend`, as `distill-engine
    run` does, and return the run's summary (what summary.json holds: one {"phase", "kind",
    "steps", "dev"} per phase).

    `overrides` are `--set`s as a dict of dotted keys to Python values (`{"phases.td1.epochs": 1}`;
    paths relative to the working directory); `output_dir` sets run.output_dir; `resume` continues
    the run there, `overwrite` replaces it (neither: the directory must hold no run)."""
    from distill_engine.recipe import Recipe, load_recipe, recipe_to_dict, structure
    from distill_engine.recipe.loader import overridden
    from distill_engine.rundir import API_WORDS
    from distill_engine.runner import Runner, plan

    if resume and overwrite:
        raise RecipeError("run: resume and overwrite exclude each other")
    sets = [f"{key}={toml_value(value)}" for key, value in (overrides or {}).items()]
    if output_dir is not None:
        sets.append(f"run.output_dir={toml_value(str(output_dir))}")
    if isinstance(recipe, Recipe):
        resolved = structure(overridden(recipe_to_dict(recipe), sets), source="recipe")
        shown = "RECIPE"
    else:
        # (a `Recipe` above is taken as it is: every field of it is the caller's value)
        notes: list[str] = []
        resolved = load_recipe(Path(recipe), sets, resume=resume, notes=notes)
        for note in notes:  # as `run --resume` prints them
            print(f"note: {note}", file=sys.stderr, flush=True)
        shown = str(recipe)
    runner = Runner(plan(resolved, backend), progress=progress,
                    mode="resume" if resume else "overwrite" if overwrite else "new",
                    command=["run", shown, "--backend", backend, *(a for s in sets for a in ("--set", s))],
                    words=API_WORDS)
    return runner.run()


def _mapping(value, student_layers: int, teacher_layers: int, where: str):
    from distill_engine.graph import build_mapping
    from distill_engine.graph.mapping import LayerMapping

    if value is None or isinstance(value, LayerMapping):
        return value
    if isinstance(value, str):
        return build_mapping(value, student_layers, teacher_layers, where=where)
    if isinstance(value, Mapping):
        return build_mapping(value.get("strategy", "uniform"), student_layers, teacher_layers, value.get("layers"),
                             where=where)
    raise RecipeError(f"{where}: expected a strategy name, a table {{strategy, layers}} or a LayerMapping")


def _requests(losses, kind: str, student_layers: int, teacher_layers: int) -> list:
    """The loss requests of a phase: the kind's defaults, or each given loss (a kind's name, a
    table as a recipe's losses entry writes it, or a `LossRequest`)."""
    from distill_engine.graph import LossRequest
    from distill_engine.planning import DEFAULT_LOSSES, DISTILL_KINDS

    if losses is None:
        if kind not in DISTILL_KINDS:
            raise RecipeError(f'kind "{kind}": expected one of {", ".join(DISTILL_KINDS)} (or give losses)')
        return [LossRequest(k) for k in DEFAULT_LOSSES[kind]]
    out = []
    for i, loss in enumerate(losses):
        if isinstance(loss, str):
            out.append(LossRequest(loss))
        elif isinstance(loss, Mapping):
            table = dict(loss)
            if "kind" not in table:
                raise RecipeError(f"losses[{i}]: a loss table needs its kind")
            name, weight = table.pop("kind"), table.pop("weight", 1.0)
            mapping = _mapping(table.pop("mapping", None), student_layers, teacher_layers, f"losses[{i}].mapping")
            out.append(LossRequest(name, weight, table, mapping))
        else:
            out.append(loss)
    return out


def phase_losses(teacher, student, texts, texts_b=None, *, labels=None, kind: str = "task_distill_intermediate",
                 losses=None, mapping="uniform", mask_padding: bool = False, backend: str = "torch",
                 device: str = "cpu", max_seq_length: int | None = None) -> dict[str, float]:
    """One phase's loss terms for a teacher/student pair on one batch of texts, without training:
    {term name: value, ..., "total": the weighted sum}, as the phase's first step would log them
    without dropout (`Trainer.losses`).

    `teacher`, `student`: `Predictor`s from `load`, or checkpoint paths (loaded on `backend`).
    `kind` picks the default losses (TinyBERT's: `general_distill` / `task_distill_intermediate`:
    attention, embedding and hidden MSE; `task_distill_prediction`: soft cross-entropy); `losses`
    replaces them: kinds' names or tables as a recipe writes them (`{"kind": "kl_divergence",
    "temperature": 2.0}`). `mapping`: the layer mapping strategy ("uniform", "top", "bottom",
    "last") or `{"strategy": "explicit", "layers": [...]}`. `labels` (class ids or scores) for
    the losses that read them. The texts are tokenised with the teacher's vocabulary, padded to
    `max_seq_length` (default: the teacher's recorded one, else 128), as data.padding =
    "max_length" does."""
    from distill_engine.backend import TrainSpec
    from distill_engine.graph import build_graph
    from distill_engine.losses import has_implementation, missing_message
    from distill_engine.optim import OptimizerSpec

    if not isinstance(teacher, Predictor):
        teacher = load(teacher, backend=backend, device=device, max_seq_length=max_seq_length)
    if not isinstance(student, Predictor):
        student = load(student, backend=backend, device=device)
    if student.backend != teacher.backend or student.device != teacher.device:
        raise DataError(f"phase_losses: the teacher is on {teacher.backend} {teacher.device}, the student on "
                        f"{student.backend} {student.device}; load both on one backend and device")
    if student.config.vocab_size != teacher.config.vocab_size:
        raise DataError(f"phase_losses: the student's vocabulary ({student.config.vocab_size}) is not the "
                        f"teacher's ({teacher.config.vocab_size}): they must read the same token ids")
    s_layers, t_layers = student.config.num_hidden_layers, teacher.config.num_hidden_layers
    graph = build_graph(_requests(losses, kind, s_layers, t_layers), student.config, teacher.config,
                        _mapping(mapping, s_layers, t_layers, "mapping"), where="phase_losses",
                        mask_padding=mask_padding)
    for term in graph.terms:
        if not has_implementation(term.kind, student.backend):
            raise RecipeError(f"phase_losses: {missing_message(term.kind, student.backend)}")
    texts = [texts] if isinstance(texts, str) else list(texts)
    texts_b = [texts_b] if isinstance(texts_b, str) else texts_b
    length = max_seq_length or teacher.max_seq_length
    data = teacher.tokenizer.encode(texts, texts_b, length)
    batch = data.batch(np.arange(len(data)))
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != len(texts):
            raise DataError(f"labels: {len(labels)} given for {len(texts)} texts")
        batch["labels"] = labels.astype(np.float32 if student.config.num_labels == 1 else np.int32)
    elif graph.needs_labels:
        raise DataError(f"labels: {', '.join(t.kind for t in graph.terms if t.definition.needs_labels)} "
                        "compares with gold labels; give labels")
    spec = TrainSpec(graph=graph, optimizer=OptimizerSpec(lr=0.0), learning_rates=np.zeros(1, np.float32))
    trainer = student.plugin.trainer(student.model, teacher.model if graph.needs_teacher else None, spec)
    return trainer.losses(batch)
