"""The engine's conformance suite run for the PyTorch backend, and a broken backend it must catch."""

import numpy as np
import pytest
import torch

from distill_engine.bert import init_parameters
from distill_engine.hookspecs import hookimpl
from distill_engine.plugins import get_backend
from distill_engine.testing.suite import BackendConformance
from distill_engine.testing.conformance import check_losses, check_taps
from distill_engine.testing.fixtures import tiny_config
from distill_engine_torch.backend import TorchBackend, TorchModel
from distill_engine_torch import model as torch_model


class TestTorchConformance(BackendConformance):
    backend_name = "torch"


class TestNumpyConformance(BackendConformance):
    backend_name = "numpy"


class _SoftmaxBeforeTap(torch_model._Layer):
    """A typical bug: the tap returns attention probabilities instead of raw scores."""

    def forward(self, x, additive_mask):
        x_out, scores, values = super().forward(x, additive_mask)
        return x_out, torch.softmax(scores, dim=-1), values


class BrokenBackend(TorchBackend):
    name = "broken-torch"

    def load_model(self, config, state, device):
        model = TorchModel.__new__(TorchModel)
        original = torch_model._Layer
        torch_model._Layer = _SoftmaxBeforeTap
        try:
            TorchModel.__init__(model, config, state, device)
        finally:
            torch_model._Layer = original
        return model


class SkipsProjection(TorchBackend):
    name = "noproj-torch"

    def load_model(self, config, state, device):
        model = super().load_model(config, state, device)
        model.module.project = lambda hidden, entry: hidden[..., : config.projection_dim] if \
            hidden.shape[-1] >= config.projection_dim else torch.nn.functional.pad(hidden, (0, config.projection_dim - hidden.shape[-1]))
        return model


class BrokenPlugin:
    @hookimpl
    def register_backends(self, register):
        register("broken-torch", BrokenBackend)
        register("noproj-torch", SkipsProjection)


def _batch():
    return {"input_ids": np.array([[2, 7, 9, 3, 0]], np.int32), "token_type_ids": np.zeros((1, 5), np.int32),
            "attention_mask": np.array([[1, 1, 1, 1, 0]], np.int32), "labels": np.array([1], np.int32)}


def test_suite_catches_softmax_before_the_attention_tap(register_plugin):
    register_plugin(BrokenPlugin(), name="broken")
    config = tiny_config(num_labels=2, initializer_range=0.2)
    params = init_parameters(config, 0)
    with pytest.raises(AssertionError, match=r"tap attention\.0: differs from the reference"):
        check_taps(get_backend("broken-torch").load_model(config, params, None or _cpu()).forward(_batch()),
                   config, params, _batch())


def test_suite_catches_a_skipped_projection(register_plugin):
    from distill_engine.backend import TrainSpec
    from distill_engine.graph import build_graph, build_mapping
    from distill_engine.optim import OptimizerSpec

    register_plugin(BrokenPlugin(), name="broken")
    teacher = tiny_config(num_labels=2, initializer_range=0.2)
    student = tiny_config(num_labels=2, hidden_size=8, num_hidden_layers=2, intermediate_size=12,
                          projection="shared", projection_dim=16, initializer_range=0.2)
    graph = build_graph([("embedding_mse", 1, 1), ("hidden_mse", 1, 1)], student, teacher,
                        build_mapping("uniform", 2, 4), where="t")
    backend = get_backend("noproj-torch")
    t_params, s_params = init_parameters(teacher, 1), init_parameters(student, 2)
    trainer = backend.trainer(backend.load_model(student, s_params, _cpu()), backend.load_model(teacher, t_params, _cpu()),
                              TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32)))
    with pytest.raises(AssertionError, match="loss embedding_mse: differs from the reference"):
        check_losses(trainer.losses(_batch()), graph, student, s_params, teacher, t_params, _batch())


def _cpu():
    from distill_engine.device import Device

    return Device("cpu")
