"""The built-in task type "sequence": one label per sentence or sentence pair.

Classification (a class per text, `labels = [...]`) and regression (a real-valued score, no
labels), in TSV, CSV or JSON Lines files, with the nine GLUE tasks as presets. The definition is
`distill_engine.data.tasks.Task` (a recipe's `[data.task]` table); reading and writing the files
is `distill_engine.data.tasks`, the metric functions `distill_engine.data.metrics`. The head is
the pooled one: `num_labels` outputs per row (1 for regression), a row per example.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from distill_engine.data.encoded import EncodedDataset
from distill_engine.data.tasks import TASKS, Task, TaskExamples, find_preset, read_task_examples, read_task_file
from distill_engine.errors import DataError
from distill_engine.io import write_text_atomically
from distill_engine.tasks.classes import ClassCounts
from distill_engine.tasks.metrics import score

# TinyBERT trains a regression task's prediction layer against the gold scores (MSE), in
# fine-tuning and in the prediction-layer phase alike; classification keeps the engine's defaults.
_PREDICTION_PHASES = ("teacher_finetune", "task_distill_prediction")


def decode(task: Task, outputs: np.ndarray) -> np.ndarray:
    """Predictions from the head's outputs: class ids (argmax over [N, C]) or scores ([N, 1] or [N])."""
    outputs = np.asarray(outputs)
    if task.is_regression:
        if outputs.ndim == 2:
            return outputs[:, 0]
        if outputs.ndim == 1:
            return outputs
        raise DataError(f"regression logits must be [N] or [N, 1], got shape {outputs.shape}")
    if outputs.ndim != 2:
        raise DataError(f"classification logits must be [N, C], got shape {outputs.shape}")
    return np.argmax(outputs, axis=-1)


def compute_metrics(task: Task, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Each of `task.metrics` on the decoded `logits` against `labels`, as Python floats."""
    return score(task.metrics, decode(task, logits), labels, where=f"task {task.name}")


class SequenceTaskType:
    """Sentence (pair) classification and regression: today's tasks, GLUE's presets."""

    name = "sequence"
    description = ("a label (or a score) per sentence or sentence pair; TSV, CSV or JSON Lines; "
                   "the GLUE tasks as presets")
    definition = Task
    head = "pooled"
    submission_format = "GLUE submission format"

    def presets(self) -> Mapping[str, Task]:
        return TASKS

    def preset(self, name: str) -> Task | None:
        return find_preset(name)

    def read(self, path: Path, task: Task) -> TaskExamples:
        return read_task_examples(path, task)

    def encode(self, examples: TaskExamples, tokenizer: Any, max_seq_length: int) -> EncodedDataset:
        return tokenizer.encode(examples.text_a, examples.text_b, max_seq_length, labels=examples.labels)

    def num_outputs(self, task: Task) -> int:
        return task.num_labels

    def default_losses(self, task: Task, phase_kind: str) -> tuple[str, ...] | None:
        return ("mse",) if task.is_regression and phase_kind in _PREDICTION_PHASES else None

    def label_source(self, task: Task) -> str:
        return f"{task.label!r} column"

    def evaluate(self, task: Task, outputs: np.ndarray, data: EncodedDataset, examples: Any) -> dict[str, float]:
        return compute_metrics(task, outputs, examples.labels)  # a row per example

    def class_counts(self, task: Task, outputs: np.ndarray, data: EncodedDataset, examples: Any) -> ClassCounts | None:
        """The confusion matrix of a classification task's evaluation (None for regression)."""
        if task.is_regression or examples.labels is None:
            return None
        return ClassCounts.from_predictions(task.labels, decode(task, outputs), np.asarray(examples.labels))

    def write_predictions(self, task: Task, source: Path, outputs: np.ndarray, data: EncodedDataset,
                          path: Path) -> int:
        """GLUE's submission format: "index<TAB>prediction" (the label's name; a regression task's
        score), one row per example, the index from the file's `index` column or the row number."""
        table = read_task_file(source, task)
        at = table.header.index("index") if table.header is not None and "index" in table.header else None
        indices = [r[at] if at is not None else str(i) for i, r in enumerate(table.records)]
        predicted = decode(task, outputs)
        labels = ([f"{float(v):.6g}" for v in predicted] if task.is_regression
                  else [task.labels[int(i)] for i in predicted])
        lines = ["index\tprediction"] + [f"{i}\t{label}" for i, label in zip(indices, labels)]
        write_text_atomically(path, "\n".join(lines) + "\n")
        return len(lines) - 1
