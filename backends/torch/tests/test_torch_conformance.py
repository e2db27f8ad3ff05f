"""PyTorch backend against the numpy reference: taps, losses, training steps (hypothesis over sizes)."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_engine.backend import TrainSpec
from distill_engine.bert import init_parameters
from distill_engine.device import Device
from distill_engine.graph import build_graph, build_mapping
from distill_engine.optim import OptimizerSpec
from distill_engine.testing.conformance import assert_close, check_losses, check_taps
from distill_engine.testing.strategies import batches, bert_configs
from distill_engine_torch.backend import TorchBackend

BACKEND = TorchBackend()
CPU = Device("cpu")
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(config=bert_configs(), batch=batches(), seed=st.integers(0, 1000))
def test_taps_match_reference(config, batch, seed):
    params = init_parameters(config, seed)
    check_taps(BACKEND.load_model(config, params, CPU).forward(batch), config, params, batch)


@st.composite
def distill_setups(draw):
    heads = draw(st.integers(1, 3))
    teacher = draw(bert_configs(heads=heads, num_labels=2))
    student = draw(bert_configs(heads=heads, num_labels=2, projection_dim=teacher.hidden_size))
    student = student.__class__(**{**student.to_dict(), "num_hidden_layers": min(student.num_hidden_layers,
                                                                                    teacher.num_hidden_layers),
                                   "projection": draw(st.sampled_from(["shared", "per_entry"]))})
    return teacher, student


@FAST
@given(setup=distill_setups(), batch=batches(), seed=st.integers(0, 1000), temperature=st.floats(0.5, 4))
def test_losses_match_reference(setup, batch, seed, temperature):
    teacher, student = setup
    t_params, s_params = init_parameters(teacher, seed), init_parameters(student, seed + 1)
    mapping = build_mapping("uniform", student.num_hidden_layers, teacher.num_hidden_layers)
    kinds = ["attention_mse", "embedding_mse", "hidden_mse", "soft_cross_entropy", "hard_cross_entropy", "mse"]
    graph = build_graph([(k, 0.5 + i, temperature) for i, k in enumerate(kinds)], student, teacher, mapping, where="t")
    batch = {**batch, "labels": batch["labels"] % 2}
    trainer = BACKEND.trainer(BACKEND.load_model(student, s_params, CPU), BACKEND.load_model(teacher, t_params, CPU),
                              TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32)))
    check_losses(trainer.losses(batch), graph, student, s_params, teacher, t_params, batch)


def _tiny_pair():
    from distill_engine.testing.fixtures import tiny_config

    teacher = tiny_config(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    student = tiny_config(num_labels=2, hidden_size=8, num_hidden_layers=2, intermediate_size=12,
                          projection="shared", projection_dim=16, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)
    return teacher, student


def test_training_reduces_the_distillation_loss():
    teacher, student = _tiny_pair()
    graph = build_graph([("attention_mse", 1, 1), ("embedding_mse", 1, 1), ("hidden_mse", 1, 1)], student, teacher,
                        build_mapping("uniform", 2, 4), where="t")
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(5, 30, (4, 10)).astype(np.int32), "token_type_ids": np.zeros((4, 10), np.int32),
             "attention_mask": np.ones((4, 10), np.int32)}
    spec = TrainSpec(graph, OptimizerSpec(lr=1e-2, clip="global_norm"), np.full(30, 1e-2, np.float32))
    trainer = BACKEND.trainer(BACKEND.load_model(student, init_parameters(student, 0), CPU),
                              BACKEND.load_model(teacher, init_parameters(teacher, 1), CPU), spec)
    first = trainer.losses(batch)["total"]
    values = [trainer.step(batch) for _ in range(30)]
    assert values[-1]["total"] < 0.5 * first
    assert values[0]["lr"] == pytest.approx(1e-2)


def test_adamw_step_excludes_bias_and_layernorm_from_decay():
    """With a zero learning signal (identical teacher and student, zero loss) only decay moves weights."""
    teacher, _ = _tiny_pair()
    params = init_parameters(teacher, 0)
    graph = build_graph([("hidden_mse", 1, 1)], teacher, teacher, build_mapping("uniform", 4, 4), where="t")
    spec = TrainSpec(graph, OptimizerSpec(lr=0.1, weight_decay=0.5), np.full(1, 0.1, np.float32))
    student = BACKEND.load_model(teacher, params, CPU)
    trainer = BACKEND.trainer(student, BACKEND.load_model(teacher, params, CPU), spec)
    batch = {"input_ids": np.full((1, 4), 7, np.int32), "token_type_ids": np.zeros((1, 4), np.int32),
             "attention_mask": np.ones((1, 4), np.int32)}
    trainer.step(batch)
    after = student.state_dict()
    w = "encoder.layer.0.attention.self.query.weight"
    np.testing.assert_allclose(after[w], params[w] * (1 - 0.1 * 0.5), rtol=1e-6)
    for name in ("encoder.layer.0.attention.self.query.bias", "embeddings.LayerNorm.weight"):
        np.testing.assert_array_equal(after[name], params[name])


def test_teacher_forward_records_no_graph():
    teacher, student = _tiny_pair()
    graph = build_graph([("hidden_mse", 1, 1)], student, teacher, build_mapping("uniform", 2, 4), where="t")
    t_model = BACKEND.load_model(teacher, init_parameters(teacher, 1), CPU)
    trainer = BACKEND.trainer(BACKEND.load_model(student, init_parameters(student, 0), CPU), t_model,
                              TrainSpec(graph, OptimizerSpec(), np.full(2, 1e-3, np.float32)))
    batch = {"input_ids": np.full((2, 5), 7, np.int32), "token_type_ids": np.zeros((2, 5), np.int32),
             "attention_mask": np.ones((2, 5), np.int32)}
    trainer.step(batch)
    assert all(p.grad is None for p in t_model.module.parameters())
    assert not t_model.module.training


def test_device_errors():
    from distill_engine.errors import DeviceError

    with pytest.raises(DeviceError, match='does not support device "ascend:0"'):
        BACKEND.check_device(Device.parse("ascend:0"))
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match='"gpu:0" is not available'):
            BACKEND.check_device(Device.parse("gpu:0"))


def test_per_parameter_and_global_clipping_differ_as_documented():
    teacher, student = _tiny_pair()
    graph = build_graph([("hidden_mse", 1, 1)], student, teacher, build_mapping("uniform", 2, 4), where="t")
    batch = {"input_ids": np.full((2, 5), 7, np.int32), "token_type_ids": np.zeros((2, 5), np.int32),
             "attention_mask": np.ones((2, 5), np.int32)}
    norms = {}
    for clip in ("global_norm", "per_parameter"):
        trainer = BACKEND.trainer(BACKEND.load_model(student, init_parameters(student, 0), CPU),
                                  BACKEND.load_model(teacher, init_parameters(teacher, 1), CPU),
                                  TrainSpec(graph, OptimizerSpec(clip=clip, max_grad_norm=1e-3), np.zeros(1, np.float32)))
        trainer._objective(batch, train=False)[0].backward()
        trainer._clip()
        grads = [p.grad for p in trainer.params if p.grad is not None]
        norms[clip] = (float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))),
                       max(float(g.norm()) for g in grads))
    assert norms["global_norm"][0] == pytest.approx(1e-3, rel=1e-3)
    assert norms["per_parameter"][1] <= 1e-3 * (1 + 1e-4) and norms["per_parameter"][0] > 1e-3
