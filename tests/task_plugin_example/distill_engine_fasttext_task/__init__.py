"""A task-type plugin outside the engine: text classification in fastText's supervised format.

Each line of a file is one example: its label as `__label__<name>` first, then the text
(`__label__positive a gripping , funny film`). A recipe picks the type in its task table:

    [data.task]
    type = "fasttext"
    name = "reviews"
    labels = ["negative", "positive"]
    metrics = ["macro_f1", "accuracy"]

It also brings a metric, `macro_f1` (the unweighted mean of every class's F1), through
`register_metrics`, and writes predictions as fastText does (`__label__<name>` a line).
Everything else (the head, the backends, the losses) is the engine's.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

from distill_engine.errors import DataError, FieldError
from distill_engine.hookspecs import hookimpl
from distill_engine.io import write_text_atomically
from distill_engine.tasks.metrics import MetricDefinition, check_metrics, score

PREFIX = "__label__"


def _labels(_instance, _attribute, value: tuple) -> None:
    if len(value) < 2:
        raise FieldError("labels", f"{list(value)}: a classification task needs two labels at least")
    for i, label in enumerate(value):
        if not isinstance(label, str) or not label or any(ch.isspace() for ch in label):
            raise FieldError(f"labels[{i}]", f"{label!r} is not a fastText label (a non-empty word)")


@attrs.frozen
class FastTextTask:
    """A `[data.task]` table of type "fasttext"."""

    name: str
    labels: tuple[str, ...] = attrs.field(converter=tuple, validator=_labels)
    metrics: tuple[str, ...] = attrs.field(default=("accuracy",), converter=tuple)

    def __attrs_post_init__(self) -> None:
        check_metrics(self.metrics, "classification", "a fasttext task")

    def describe(self) -> dict:
        return {"name": self.name, "labels": list(self.labels), "metrics": list(self.metrics)}


@attrs.frozen(eq=False)
class FastTextExamples:
    texts: list[str]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.texts)


def read_fasttext(path: Path, task: FastTextTask) -> FastTextExamples:
    """Every line `__label__<name> text...`; a problem is one DataError naming path:line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    texts, labels = [], []
    index = {label: i for i, label in enumerate(task.labels)}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        first, _, text = line.strip().partition(" ")
        if not first.startswith(PREFIX):
            raise DataError(f"{path}:{number}: expected {PREFIX}<label> first, got {first[:40]!r}")
        label = first[len(PREFIX):]
        if label not in index:
            raise DataError(f"{path}:{number}: label {label!r} is not one of task {task.name}'s "
                            f"({', '.join(task.labels)})")
        if not text.strip():
            raise DataError(f"{path}:{number}: no text after the label")
        texts.append(text.strip())
        labels.append(index[label])
    if not texts:
        raise DataError(f"{path}: empty file (expected fastText lines: {PREFIX}<label> text)")
    return FastTextExamples(texts, np.asarray(labels, np.int32))


def macro_f1(predictions, gold) -> float:
    """The unweighted mean over the classes present in gold or predictions of each class's F1."""
    p, y = np.asarray(predictions).ravel(), np.asarray(gold).ravel()
    if p.shape != y.shape or p.size == 0:
        raise DataError(f"{p.size} predictions for {y.size} labels")
    scores = []
    for c in np.union1d(p, y):
        tp = np.sum((p == c) & (y == c))
        denom = np.sum(p == c) + np.sum(y == c)
        scores.append(0.0 if denom == 0 else 2.0 * tp / denom)
    return float(np.mean(scores))


class FastTextTaskType:
    name = "fasttext"
    description = "a label per text, in fastText's supervised format (__label__<name> text)"
    definition = FastTextTask
    head = "pooled"
    submission_format = "fastText labels"

    def presets(self):
        return {}

    def preset(self, name: str):
        return None

    def read(self, path, task):
        return read_fasttext(path, task)

    def encode(self, examples, tokenizer, max_seq_length):
        return tokenizer.encode(examples.texts, None, max_seq_length, labels=examples.labels)

    def num_outputs(self, task):
        return len(task.labels)

    def default_losses(self, task, phase_kind):
        return None  # the engine's: cross-entropy to fine-tune, TinyBERT's soft cross-entropy to distil

    def label_source(self, task):
        return f"{PREFIX}<label> prefix"

    def evaluate(self, task, outputs, data, examples):
        return score(task.metrics, np.argmax(outputs, axis=1), examples.labels, where=f"task {task.name}")

    def write_predictions(self, task, source, outputs, data, path):
        lines = [PREFIX + task.labels[int(i)] for i in np.argmax(outputs, axis=1)]
        write_text_atomically(path, "\n".join(lines) + "\n")  # the engine's: a reader never sees half a file
        return len(lines)


@hookimpl
def register_task_types(register):
    register(FastTextTaskType())


@hookimpl
def register_metrics(register):
    register(MetricDefinition("macro_f1", macro_f1, "classification", "unweighted mean of the classes' F1"))
