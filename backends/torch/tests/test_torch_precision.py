"""Mixed precision in the PyTorch backend: what bf16 and fp16 compute in, what stays float32, fp16's
gradient scaler and its exact resume, and the precisions the backend offers per device."""

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from distill_engine.backend import LOSS_SCALE, LOSS_SCALE_GOOD_STEPS, LOSS_SCALE_SKIPPED_STEPS, TrainSpec
from distill_engine.bert import init_parameters
from distill_engine.cli import main
from distill_engine.device import Device
from distill_engine.graph import build_graph, build_mapping
from distill_engine.optim import OptimizerSpec
from distill_engine.precision import DEFAULT_FP16_LOSS_SCALE
from distill_engine.testing.fixtures import tiny_config, write_tiny_recipe
from distill_engine.testing.suite import check_precision_step, distill_setups
from distill_engine_torch.backend import TorchBackend

BACKEND = TorchBackend()
CPU = Device("cpu")


def _setup(lr=1e-3, steps=4, **spec):
    teacher = tiny_config(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    student = tiny_config(num_labels=2, hidden_size=8, num_hidden_layers=2, intermediate_size=12, projection="shared",
                          projection_dim=16, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    graph = build_graph([("attention_mse", 1, 1), ("hidden_mse", 1, 1), ("soft_cross_entropy", 1, 1)], student,
                        teacher, build_mapping("uniform", 2, 4), where="t")
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(5, 30, (4, 10)).astype(np.int32), "token_type_ids": np.zeros((4, 10), np.int32),
             "attention_mask": np.ones((4, 10), np.int32), "labels": np.array([0, 1, 1, 0], np.int32)}
    spec = TrainSpec(graph, OptimizerSpec(lr=lr), np.full(steps, lr, np.float32), seed=3, **spec)
    s_params, t_params = init_parameters(student, 0), init_parameters(teacher, 1)
    return student, s_params, teacher, t_params, spec, batch


def _trainer(student, s_params, teacher, t_params, spec):
    model = BACKEND.load_model(student, s_params, CPU)
    return model, BACKEND.trainer(model, BACKEND.load_model(teacher, t_params, CPU), spec)


def test_precisions_per_device():
    assert BACKEND.precisions(CPU) == ("fp32", "bf16")
    gpu = BACKEND.precisions(Device("gpu"))
    assert "fp16" in gpu and gpu[0] == "fp32"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_computes_in_it_and_keeps_weights_gradients_and_moments_float32(precision):
    student, s_params, teacher, t_params, spec, batch = _setup()
    model, trainer = _trainer(student, s_params, teacher, t_params, TrainSpec(**{**_fields(spec), "precision": precision}))
    _, reference = _trainer(student, s_params, teacher, t_params, spec)
    got, want = trainer.step(batch), reference.step(batch)
    # autocast really ran: the losses differ from float32's (and the suite bounds by how much)
    assert got["total"] != want["total"] and abs(got["total"] - want["total"]) < 2e-2 * abs(want["total"])
    for name, p in model.module.named_parameters():
        assert p.dtype == torch.float32, f"{name} is {p.dtype}"
        assert p.grad is None or p.grad.dtype == torch.float32, f"gradient of {name} is {p.grad.dtype}"
    moments = [t for st in trainer.optimizer.state.values() for t in (st["exp_avg"], st["exp_avg_sq"])]
    assert moments and all(t.dtype == torch.float32 for t in moments)
    # evaluation stays float32: the same logits as a float32 model holding the same weights
    same = BACKEND.load_model(student, model.state_dict(), CPU)
    assert np.array_equal(model.predict(batch), same.predict(batch))


def _fields(spec):
    return {k: getattr(spec, k) for k in ("graph", "optimizer", "learning_rates", "seed", "loss_scale",
                                          "loss_scale_window", "precision")}


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(setup=distill_setups())
def test_fp16_step_within_its_tolerance_on_cpu(setup):
    """fp16 is offered on GPUs only; its trainer (autocast float16, GradScaler) runs on a CPU too."""
    check_precision_step(BACKEND, setup, "fp16")


def test_fp16_scales_from_two_to_the_sixteen_and_resumes_exactly():
    student, s_params, teacher, t_params, spec, batch = _setup(steps=8)
    spec = TrainSpec(**{**_fields(spec), "precision": "fp16", "loss_scale_window": 2})
    assert spec.loss_scale is None and spec.initial_loss_scale == DEFAULT_FP16_LOSS_SCALE
    model, trainer = _trainer(student, s_params, teacher, t_params, spec)
    assert float(trainer.state()[LOSS_SCALE]) == 2.0**16
    for _ in range(4):
        trainer.step(batch)
    # resume after 4 steps (dropout on): bit for bit the uninterrupted run's next 4
    weights, state = model.state_dict(), trainer.state()
    expected = [trainer.step(batch) for _ in range(4)]
    resumed_model, resumed = _trainer(student, weights, teacher, t_params, spec)
    resumed.load_state(state)
    assert [resumed.step(batch) for _ in range(4)] == expected
    after, want = resumed_model.state_dict(), model.state_dict()
    assert all(np.array_equal(after[k], want[k]) for k in want)
    end = trainer.state()
    assert set(resumed.state()) == set(end) and all(np.array_equal(resumed.state()[k], end[k]) for k in end)


def test_fp16_skips_an_overflowed_step_and_grows_the_scale_after_the_window():
    student, s_params, teacher, t_params, spec, batch = _setup(steps=4)
    overflowing = TrainSpec(**{**_fields(spec), "precision": "fp16", "loss_scale": 2.0**127})  # inf in float16 and float32
    model, trainer = _trainer(student, s_params, teacher, t_params, overflowing)
    trainer.step(batch)
    state = trainer.state()
    assert int(state[LOSS_SCALE_SKIPPED_STEPS]) == 1 and float(state[LOSS_SCALE]) == 2.0**126
    assert int(state["adam.step"]) == 0 and int(state["schedule.step"]) == 1
    assert all(np.array_equal(v, s_params[k]) for k, v in model.state_dict().items()), "an overflow must not update"
    growing = TrainSpec(**{**_fields(spec), "precision": "fp16", "loss_scale": 256.0, "loss_scale_window": 2})
    _, trainer = _trainer(student, s_params, teacher, t_params, growing)
    for _ in range(2):
        trainer.step(batch)
    state = trainer.state()
    assert float(state[LOSS_SCALE]) == 512.0 and int(state[LOSS_SCALE_GOOD_STEPS]) == 0
    assert int(state[LOSS_SCALE_SKIPPED_STEPS]) == 0 and int(state["adam.step"]) == 2


def test_bf16_tiny_pipeline_through_the_cli(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    assert main(["run", str(recipe), "--backend", "torch", "--no-progress", "--set", 'run.precision="bf16"']) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    assert json.loads((run / "recipe.json").read_text())["recipe"]["run"]["precision"] == "bf16"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["total"]) for r in records if r["event"] == "train")
    summary = json.loads((run / "summary.json").read_text())
    assert summary[0]["dev"]["accuracy"] > 0.7  # the teacher learnt the toy task in bfloat16
    # fp16 on this CPU: one line before anything runs
    assert main(["run", str(recipe), "--backend", "torch", "--output-dir", str(tmp_path / "fp16"),
                 "--set", 'run.precision="fp16"']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: run.precision: "fp16"') and "needs a GPU with backend torch" in err
    assert err.endswith('on cpu use "fp32" or "bf16"') and "\n" not in err and not (tmp_path / "fp16").exists()
