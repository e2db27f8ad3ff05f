"""The built-in task type ("sequence") and metrics, registered through the same hooks as a plugin's."""

from __future__ import annotations

from distill_engine.data import metrics as m
from distill_engine.hookspecs import hookimpl
from distill_engine.tasks.metrics import MetricDefinition
from distill_engine.tasks.sequence import SequenceTaskType

BUILTIN_METRICS = (
    MetricDefinition("accuracy", m.accuracy, "classification", "fraction of examples whose class is the gold one"),
    MetricDefinition("f1", m.f1, "classification", "binary F1, the second label positive"),
    MetricDefinition("mcc", m.mcc, "classification", "Matthews correlation (multi-class form)"),
    MetricDefinition("pearson", m.pearson, "regression", "Pearson correlation of the scores"),
    MetricDefinition("spearman", m.spearman, "regression", "Spearman rank correlation of the scores"),
)


@hookimpl
def register_task_types(register):
    register(SequenceTaskType())


@hookimpl
def register_metrics(register):
    for definition in BUILTIN_METRICS:
        register(definition)
