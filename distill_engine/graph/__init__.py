"""The distillation graph: taps, layer mappings, loss specifications, resolved per phase."""

from distill_engine.graph.distill_graph import DistillGraph, build_graph
from distill_engine.graph.losses import LOSS_KINDS, LossKindInfo, LossTerm
from distill_engine.graph.mapping import STRATEGIES, LayerMapping, build_mapping, uniform_layers
from distill_engine.graph.taps import Taps

__all__ = ["DistillGraph", "build_graph", "LOSS_KINDS", "LossKindInfo", "LossTerm", "STRATEGIES",
           "LayerMapping", "build_mapping", "uniform_layers", "Taps"]
