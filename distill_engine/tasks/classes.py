"""What a classification evaluation's headline metric hides: the confusion matrix, per-class
precision/recall/F1, the majority-class baseline, and whether the model is degenerate.

A model that answers the majority class for every example scores MRPC's dev accuracy 0.6838 and
looks fine beside a real one (issue 33). So every evaluation of a classification task also
records its confusion matrix (`ClassCounts.to_record()`: in the `eval` and `phase_end` records of
metrics.jsonl), from which the run's output and its report derive the rest here, with numpy
alone: the report reads the run directory, never the model.

Degenerate (`warnings`), judged on what the model predicts, not on how it was trained:
- it predicts one class for at least `ONE_CLASS_SHARE` of the examples, while the gold labels are
  not that lopsided themselves (a dev set that is 97 % one class makes such answers legitimate);
- or its first metric (the one that ranks checkpoints) is at or below the majority-class
  baseline's, i.e. it does no better than always answering the most frequent gold class.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

# "(almost) every example": a model that answers one class this often has learnt nothing else
ONE_CLASS_SHARE = 0.95
# metrics are floats from different code paths: a score within this of the baseline is "at" it
TIE = 1e-9


@attrs.frozen
class ClassCounts:
    """A confusion matrix: `matrix[i][j]` examples of gold class `labels[i]` predicted as `labels[j]`."""

    labels: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]

    @classmethod
    def from_predictions(cls, labels: Sequence[str], predicted: np.ndarray, gold: np.ndarray) -> ClassCounts:
        k = len(labels)
        counts = np.zeros((k, k), np.int64)
        np.add.at(counts, (np.asarray(gold, np.int64).ravel(), np.asarray(predicted, np.int64).ravel()), 1)
        return cls(tuple(labels), tuple(tuple(int(v) for v in row) for row in counts))

    @classmethod
    def from_record(cls, record) -> ClassCounts | None:
        """From a log record's "classes" value; None when absent or not a well-formed matrix (an
        older run, a task type that records none, a hand-edited log)."""
        if not isinstance(record, dict):
            return None
        labels, matrix = record.get("labels"), record.get("matrix")
        if not (isinstance(labels, list) and isinstance(matrix, list) and len(matrix) == len(labels) and labels
                and all(isinstance(r, list) and len(r) == len(labels) for r in matrix)):
            return None
        try:
            return cls(tuple(str(x) for x in labels), tuple(tuple(int(v) for v in row) for row in matrix))
        except (TypeError, ValueError):
            return None

    def to_record(self) -> dict:
        return {"labels": list(self.labels), "matrix": [list(row) for row in self.matrix]}

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.matrix, np.int64).reshape(len(self.labels), len(self.labels))

    @property
    def examples(self) -> int:
        return int(self.array.sum())

    @property
    def gold_counts(self) -> np.ndarray:
        return self.array.sum(axis=1)

    @property
    def predicted_counts(self) -> np.ndarray:
        return self.array.sum(axis=0)

    @property
    def majority(self) -> int:
        """The most frequent gold class (the first of equals)."""
        return int(np.argmax(self.gold_counts))

    def per_class(self) -> list[dict]:
        """Per class: precision, recall and F1 (0 where undefined: nothing predicted, or no gold
        example of it), gold support and how often it was predicted."""
        a = self.array
        out = []
        for i, label in enumerate(self.labels):
            tp, predicted, support = int(a[i, i]), int(a[:, i].sum()), int(a[i].sum())
            precision = tp / predicted if predicted else 0.0
            recall = tp / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out.append({"label": label, "precision": precision, "recall": recall, "f1": f1, "support": support,
                        "predicted": predicted})
        return out

    def expanded(self) -> tuple[np.ndarray, np.ndarray]:
        """(gold, predicted) class ids of every example, in matrix order (for metric functions)."""
        a = self.array
        gold = np.repeat(np.repeat(np.arange(len(self.labels)), len(self.labels)), a.ravel())
        predicted = np.repeat(np.tile(np.arange(len(self.labels)), len(self.labels)), a.ravel())
        return gold, predicted

    def baseline(self, metrics: Sequence[str]) -> dict[str, float]:
        """Each of `metrics` (class-id metrics of the metric registry) for always answering the
        majority gold class."""
        from distill_engine.tasks.metrics import score

        gold, _ = self.expanded()
        return score(tuple(metrics), np.full_like(gold, self.majority), gold)


class DevMetrics(dict):
    """An evaluation's metrics (a plain dict to every reader) that also carry its `ClassCounts`
    (None for a regression task or a task type that records none): best-keeping, manifests and
    summary.json keep seeing the metrics alone."""

    def __init__(self, metrics: dict, classes: ClassCounts | None = None):
        super().__init__(metrics)
        self.classes = classes


def classes_of(metrics) -> ClassCounts | None:
    return getattr(metrics, "classes", None)


def warnings(counts: ClassCounts, dev: dict | None, metrics: Sequence[str]) -> list[str]:
    """Why this evaluation's model looks degenerate, as sentences (empty: it does not). `dev` is the
    evaluation's metrics; `metrics` the task's metric names, the first ranking checkpoints."""
    out = []
    total = counts.examples
    if not total:
        return out
    predicted = counts.predicted_counts
    top = int(np.argmax(predicted))
    share = predicted[top] / total
    if share >= ONE_CLASS_SHARE and counts.gold_counts.max() / total < ONE_CLASS_SHARE:
        how = "all" if predicted[top] == total else f"{100 * share:.1f} % of the"
        out.append(f'it predicts "{counts.labels[top]}" for {how} {total} dev examples')
    first = metrics[0] if metrics else None
    value = (dev or {}).get(first) if first else None
    if isinstance(value, (int, float)):
        try:
            base = counts.baseline([first])[first]
        except Exception:  # noqa: BLE001 (a plugin metric that cannot score class ids: no baseline check)
            return out
        if value <= base + TIE:
            out.append(f"its {first} {value:.4f} is at or below the majority-class baseline's {base:.4f} "
                       f'(always "{counts.labels[counts.majority]}")')
    return out
