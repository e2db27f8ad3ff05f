"""The sequence task type's metric functions (accuracy, F1, Matthews correlation, Pearson, Spearman) on
NumPy arrays; they are registered as metrics by `distill_engine.tasks.builtin`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from distill_engine.errors import DataError

if TYPE_CHECKING:
    from distill_engine.data.tasks import Task


def _pair(pred, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred).ravel()
    y = np.asarray(labels).ravel()
    if p.shape != y.shape:
        raise DataError(f"{p.size} predictions for {y.size} labels")
    if p.size == 0:
        raise DataError("cannot score an empty set of predictions")
    return p, y


def accuracy(pred, labels) -> float:
    """Fraction of predictions equal to their label."""
    p, y = _pair(pred, labels)
    return float(np.mean(p == y))


def f1(pred, labels) -> float:
    """Binary F1 with class 1 as positive; 0.0 when there are no positives among predictions or labels."""
    p, y = _pair(pred, labels)
    tp = float(np.sum((p == 1) & (y == 1)))
    fp = float(np.sum((p == 1) & (y != 1)))
    fn = float(np.sum((p != 1) & (y == 1)))
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


def mcc(pred, labels) -> float:
    """Matthews correlation coefficient (multi-class form, equal to the binary one for two classes); 0.0 when undefined because predictions or labels are constant."""
    p, y = _pair(pred, labels)
    classes, inverse = np.unique(np.concatenate([p, y]), return_inverse=True)
    k = len(classes)
    pi, yi = inverse[: p.size], inverse[p.size :]
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (yi, pi), 1.0)
    t = confusion.sum(axis=1)
    q = confusion.sum(axis=0)
    c = np.trace(confusion)
    s = confusion.sum()
    num = c * s - t @ q
    den = np.sqrt((s * s - q @ q) * (s * s - t @ t))
    return 0.0 if den == 0 else float(num / den)


def _constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


def pearson(pred, labels) -> float:
    """Pearson correlation; 0.0 when undefined because either side is constant."""
    p, y = _pair(pred, labels)
    p, y = p.astype(np.float64), y.astype(np.float64)
    if p.size < 2 or _constant(p) or _constant(y):
        return 0.0
    from scipy import stats  # here: importing scipy.stats takes seconds, and only STS-B's metrics need it

    return float(stats.pearsonr(p, y).statistic)


def spearman(pred, labels) -> float:
    """Spearman rank correlation; 0.0 when undefined because either side is constant."""
    p, y = _pair(pred, labels)
    p, y = p.astype(np.float64), y.astype(np.float64)
    if p.size < 2 or _constant(p) or _constant(y):
        return 0.0
    from scipy import stats

    return float(stats.spearmanr(p, y).statistic)


def primary_metric(task: Task) -> str:
    """The metric that ranks checkpoints for `task`: the first of `task.metrics`."""
    return task.metrics[0]
