"""The metric registry: every metric a task may name, filled through the `register_metrics` hook.

A metric is a `MetricDefinition`: a name (what a task's `metrics = [...]` writes), the function
that computes it from predictions and gold answers of whole examples, and what it scores
(`applies_to`: "classification" and "regression" for the built-in sequence task type; a task
type of its own kind, entity tags or answer spans, names its own). The built-in metrics register
through the same hook (`distill_engine.tasks.builtin`), so entity F1 or SQuAD's EM/F1 arrive as
plugins. Scores are higher-is-better: best-keeping ranks checkpoints by a task's first metric.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from distill_engine.errors import FieldError, RecipeError
from distill_engine.registries import HookRegistry


@attrs.frozen
class MetricDefinition:
    """One metric. `function(predictions, gold)` returns a float (higher is better), computed per
    example: predictions and gold are whatever the task type of `applies_to` decodes (class ids,
    scores, tag sequences, answer texts). `summary` is one line for `distill-engine tasks`."""

    name: str
    function: Callable[[Any, Any], float]
    applies_to: str
    summary: str = ""


def _check(obj: Any) -> str | None:
    if not isinstance(obj, MetricDefinition):
        return f"expected a MetricDefinition, got {type(obj).__name__}"
    return None


METRICS = HookRegistry("register_metrics", "metric", _check)


def metric_definitions() -> dict[str, MetricDefinition]:
    """Every registered metric by name (built-ins first)."""
    return METRICS.all()


def metrics_for(applies_to: str) -> tuple[str, ...]:
    """The names of the metrics that score `applies_to` ("classification", "regression", ...)."""
    return tuple(name for name, d in metric_definitions().items() if d.applies_to == applies_to)


def check_metrics(names: tuple[str, ...], applies_to: str, kind: str, *, hint: Callable[[str], str] | None = None
                  ) -> None:
    """Refuse a metric list a task of `kind` ("a classification task") cannot use, with one
    `FieldError` naming `metrics[i]` and the metrics it may name."""
    if not names:
        raise FieldError("metrics", "is empty: name one metric at least (the first ranks checkpoints)")
    allowed = metrics_for(applies_to)
    for i, name in enumerate(names):
        if name not in allowed:
            raise FieldError(f"metrics[{i}]", f"{_show(name)} is not a metric of {kind}; allowed: "
                                              f"{', '.join(allowed)}{hint(name) if hint else ''}")


def score(names: tuple[str, ...], predictions: Any, gold: Any, where: str = "") -> dict[str, float]:
    """Each metric of `names` on the same predictions and gold answers, as Python floats."""
    out = {}
    for name in names:
        definition = METRICS.get(name, RecipeError, where)
        value = definition.function(predictions, gold)
        out[name] = float(value)
    return out


def _show(value: Any) -> str:
    import json

    return json.dumps(value) if isinstance(value, str) else repr(value)
