"""The distillation graph: taps, layer mappings, loss terms, resolved per phase."""

from distill_engine.graph.distill_graph import DistillGraph, build_graph
from distill_engine.graph.losses import MASKED_FORMULA, LossRequest, LossTerm, tap_name
from distill_engine.graph.mapping import STRATEGIES, LayerMapping, build_mapping, uniform_layers
from distill_engine.graph.taps import TEACHER_PREFIX, Taps, split_teacher_taps, supplied_teacher_taps

__all__ = ["DistillGraph", "build_graph", "LossRequest", "LossTerm", "MASKED_FORMULA", "tap_name",
           "STRATEGIES", "LayerMapping", "build_mapping", "uniform_layers", "Taps",
           "TEACHER_PREFIX", "supplied_teacher_taps", "split_teacher_taps"]
