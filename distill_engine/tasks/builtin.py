"""The built-in task types ("sequence", "token", "span"), their metrics and the token and span types' loss kinds,
registered through the same hooks as a plugin's."""

from __future__ import annotations

from distill_engine.data import metrics as m
from distill_engine.hookspecs import hookimpl
from distill_engine.tasks.metrics import MetricDefinition
from distill_engine.tasks.sequence import SequenceTaskType
from distill_engine.tasks.span.losses import SPAN_LOSSES
from distill_engine.tasks.span.metrics import SPAN_METRICS
from distill_engine.tasks.span.task_type import SpanTaskType
from distill_engine.tasks.token.losses import TOKEN_LOSSES
from distill_engine.tasks.token.metrics import TOKEN_METRICS
from distill_engine.tasks.token.task_type import TokenTaskType

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
    register(TokenTaskType())
    register(SpanTaskType())


@hookimpl
def register_metrics(register):
    for definition in BUILTIN_METRICS + TOKEN_METRICS + SPAN_METRICS:
        register(definition)


@hookimpl
def register_losses(register):
    # the token and span types' kinds: a tagger's or a reader's losses come with the task type that
    # encodes its labels
    for definition in TOKEN_LOSSES + SPAN_LOSSES:
        register(definition)
