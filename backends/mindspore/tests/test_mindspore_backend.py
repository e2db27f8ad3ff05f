"""MindSpore backend: taps and losses against the numpy reference, the compiled training step against
PyTorch's AdamW, loss scaling, checkpoints (.ckpt round trip, model-zoo names), plugin registration.

The engine's full conformance suite runs in test_mindspore_suite.py; this file covers what is
specific to this backend and stays fast (each new shape compiles a graph, ~1-5 s on a laptop CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mindspore import ops
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_engine import reference
from distill_engine.backend import TrainSpec
from distill_engine.bert import BertConfig, init_parameters, is_no_decay
from distill_engine.device import Device
from distill_engine.errors import CheckpointError, DeviceError
from distill_engine.graph import LossRequest, build_graph, build_mapping
from distill_engine.hookspecs import hookimpl
from distill_engine.losses import LossDefinition
from distill_engine.losses.builtin import BUILTIN_LOSSES
from distill_engine.optim import OptimizerSpec
from distill_engine.testing.conformance import assert_close, check_losses, check_taps
from distill_engine.testing.strategies import batches, bert_configs
from distill_engine.testing.suite import check_precision_step
from distill_engine.testing.suite import distill_setups as suite_setups
from distill_engine_mindspore import runtime
from distill_engine_mindspore.backend import MindSporeBackend
from distill_engine_mindspore.checkpoint import import_ckpt, read_ckpt, write_ckpt
from distill_engine_mindspore.zoo_names import zoo_to_canonical

BACKEND = MindSporeBackend()
CPU = Device("cpu")
FAST = settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
# TinyBERT's kinds with a teacher (and labels): the objective of the training-step checks
TINYBERT_KINDS = ["attention_mse", "embedding_mse", "hidden_mse", "soft_cross_entropy", "hard_cross_entropy"]
ALL_KINDS = [d.name for d in BUILTIN_LOSSES]  # every built-in kind: the reference checks


def _configs(vocab=40, layers=(4, 2), dropout=0.0, labels=2, projection="shared"):
    teacher = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=layers[0], num_attention_heads=4,
                         intermediate_size=24, max_position_embeddings=16, initializer_range=0.2, num_labels=labels,
                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    student = BertConfig(vocab_size=vocab, hidden_size=8, num_hidden_layers=layers[1], num_attention_heads=4,
                         intermediate_size=12, max_position_embeddings=16, initializer_range=0.2, num_labels=labels,
                         projection=projection, projection_dim=16 if projection != "none" else 0,
                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return teacher, student


def _batch(seed=0, b=3, length=7):
    rng = np.random.default_rng(seed)
    lengths = [length, 3, 1][:b]
    mask = np.array([[1] * n + [0] * (length - n) for n in lengths], np.int32)
    return {"input_ids": (rng.integers(1, 40, (b, length)) * mask).astype(np.int32),
            "token_type_ids": np.zeros((b, length), np.int32), "attention_mask": mask,
            "labels": rng.integers(0, 2, b).astype(np.int32)}


# --- forward and losses against the reference (projection "none": the suite covers the others) ---
@st.composite
def same_width_setups(draw):
    heads = draw(st.integers(1, 4))
    teacher = draw(bert_configs(heads=heads, num_labels=2))
    student = BertConfig(**{**teacher.to_dict(), "num_hidden_layers": draw(st.integers(1, teacher.num_hidden_layers))})
    mapping = build_mapping(draw(st.sampled_from(["uniform", "top", "bottom"])), student.num_hidden_layers,
                            teacher.num_hidden_layers)
    graph = build_graph([(k, 0.5 + i, draw(st.floats(0.5, 4.0))) for i, k in enumerate(ALL_KINDS)],
                        student, teacher, mapping, where="test", mask_padding=draw(st.booleans()))
    seed = draw(st.integers(0, 10_000))
    return teacher, init_parameters(teacher, seed), student, init_parameters(student, seed + 1), graph, draw(batches())


@FAST
@given(setup=same_width_setups())
def test_taps_and_every_loss_match_the_reference_without_projection(setup):
    teacher, t_params, student, s_params, graph, batch = setup
    s_model = BACKEND.load_model(student, s_params, CPU)
    check_taps(s_model.forward(batch), student, s_params, batch)
    assert_close(s_model.predict(batch), reference.forward(student, s_params, batch).logits, "predict")
    trainer = BACKEND.trainer(s_model, BACKEND.load_model(teacher, t_params, CPU),
                              TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32)))
    check_losses(trainer.losses(batch), graph, student, s_params, teacher, t_params, batch)


def _l1_logits_reference(student, teacher, mask, labels, params):
    (scale,) = params
    return float(scale * np.mean(np.abs(np.asarray(student[0], np.float64) - np.asarray(teacher[0], np.float64))))


def _l1_logits_mindspore(student, teacher, mask, labels, params):
    (scale,) = params
    return scale * ops.mean(ops.abs(student[0] - teacher[0]))


class _L1LossPlugin:
    """A third-party loss: its definition and a plain five-argument MindSpore implementation."""

    @hookimpl
    def register_losses(self, register):
        from distill_engine.losses import LossParam

        register(LossDefinition("test_l1_logits", "logits", formula="scale * mean |z_S - z_T|",
                                reference=_l1_logits_reference, params=(LossParam("scale", 1.0, "a factor"),)))

    @hookimpl
    def register_loss_implementations(self, register):
        register("test_l1_logits", "mindspore", _l1_logits_mindspore)


@pytest.fixture
def entry_points_loaded():
    """This backend's plugin (its loss implementations) loaded before `register_plugin` turns autoload off."""
    from distill_engine import plugins

    plugins.load_plugins()


def test_a_repeated_kind_and_a_plugin_loss_are_terms_of_their_own(entry_points_loaded, register_plugin):
    """Results are keyed by term name ("<kind>_<n>" for a repeated kind, each with its own
    parameters), and a plugin's plain implementation runs in the compiled objective beside the
    built-ins (their fused-kernel path included)."""
    teacher_cfg, student_cfg = _configs()
    register_plugin(_L1LossPlugin(), name="l1-loss")
    t_params, s_params = init_parameters(teacher_cfg, 1), init_parameters(student_cfg, 2)
    graph = build_graph([LossRequest("attention_mse", 1.0), LossRequest("attention_mse", 0.5, {"after_softmax": True}),
                         ("soft_cross_entropy", 1.0, 1.0), ("soft_cross_entropy", 2.0, 3.0), ("hidden_mse", 1.0),
                         LossRequest("test_l1_logits", 0.25, {"scale": 3.0})],
                        student_cfg, teacher_cfg, build_mapping("uniform", 2, 4), where="test", mask_padding=True)
    assert [t.name for t in graph.terms] == ["attention_mse_1", "attention_mse_2", "soft_cross_entropy_1",
                                             "soft_cross_entropy_2", "hidden_mse", "test_l1_logits"]
    student = BACKEND.load_model(student_cfg, s_params, CPU)
    trainer = BACKEND.trainer(student, BACKEND.load_model(teacher_cfg, t_params, CPU),
                              TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32)))
    result = trainer.losses(_batch())
    assert set(result) == {t.name for t in graph.terms} | {"total"}
    check_losses(result, graph, student_cfg, s_params, teacher_cfg, t_params, _batch())
    assert result["attention_mse_1"] != result["attention_mse_2"]


def test_teacher_logits_and_value_vectors_in_one_objective_compile_and_match_the_reference():
    """Regression: with a student of the teacher's shape, a graph reading the teacher's logits and
    value vectors (kl_divergence + minilm_value_relation) failed at its first output ("Not same
    shape in device address"): MindSpore 2.10 mixed up the student's and the teacher's
    specialisations of trainer._gather, whose tap tuples then had the same shapes."""
    teacher_cfg, _ = _configs()
    student_cfg = teacher_cfg  # the same shapes: the condition of the failure
    t_params, s_params = init_parameters(teacher_cfg, 1), init_parameters(student_cfg, 2)
    graph = build_graph([("kl_divergence", 1.0, 2.0), ("minilm_value_relation", 1.0)], student_cfg, teacher_cfg,
                        build_mapping("uniform", 4, 4), where="test")
    trainer = BACKEND.trainer(BACKEND.load_model(student_cfg, s_params, CPU),
                              BACKEND.load_model(teacher_cfg, t_params, CPU),
                              TrainSpec(graph, OptimizerSpec(), np.full(1, 1e-3, np.float32)))
    batch = _batch()
    result = trainer.losses(batch)
    check_losses(result, graph, student_cfg, s_params, teacher_cfg, t_params, batch)
    stepped = trainer.step(batch)
    assert all(np.isfinite(stepped[k]) for k in ("kl_divergence", "minilm_value_relation", "total"))
    assert stepped["total"] == pytest.approx(result["total"], rel=1e-4)


@pytest.mark.parametrize("projection", ["per_entry", "paper"])
def test_parameter_names_are_canonical_and_state_is_a_copy(projection):
    _, student = _configs(projection=projection)
    params = init_parameters(student, 3)
    model = BACKEND.load_model(student, params, CPU)
    state = model.state_dict()
    assert list(state) == list(params)
    assert all(state[k].dtype == np.float32 and np.array_equal(state[k], params[k]) for k in params)
    state["pooler.dense.bias"][:] = 7.0
    assert not np.any(model.state_dict()["pooler.dense.bias"] == 7.0)


@pytest.mark.parametrize("fused_kernels", [True, False])
def test_new_batch_shapes_get_a_dynamic_graph_or_with_fused_kernels_static_ones(fused_kernels, monkeypatch):
    from distill_engine_mindspore import fused

    if fused_kernels and fused.kernels() is None:
        pytest.skip("the fused kernels could not be built (no C++ compiler)")
    monkeypatch.setenv(fused.FUSED_ENV, "1" if fused_kernels else "0")
    _, config = _configs()
    params = init_parameters(config, 3)
    model = BACKEND.load_model(config, params, CPU)
    assert (model.cell.kernels is not None) == fused_kernels
    for b, length in ((3, 7), (3, 5), (2, 9), (1, 2)):  # a short last batch, padding = "longest"
        batch = _batch(seed=length, b=b, length=length)
        check_taps(model.forward(batch), config, params, batch)
    graph = model._forwards[(True, True, None)][1]  # (need_logits, need_values, chunk)
    if fused_kernels:  # AOT custom ops cannot infer shapes inside a dynamic-shape graph
        assert graph._dynamic is None and not graph.dynamic
    else:
        assert graph._dynamic is not None or runtime.pynative()


def test_release_keeps_live_models_and_trainers_working():
    """release() drops every compiled graph; a model or trainer still alive compiles again."""
    teacher_cfg, student_cfg = _configs()
    t_params, s_params = init_parameters(teacher_cfg, 1), init_parameters(student_cfg, 2)
    student = BACKEND.load_model(student_cfg, s_params, CPU)
    teacher = BACKEND.load_model(teacher_cfg, t_params, CPU)
    graph = build_graph([(k, 1.0, 1.0) for k in TINYBERT_KINDS], student_cfg, teacher_cfg,
                        build_mapping("uniform", 2, 4), where="test")
    trainer = BACKEND.trainer(student, teacher, TrainSpec(graph, OptimizerSpec(), np.full(2, 1e-3, np.float32)))
    batch = _batch()
    before = trainer.losses(batch)
    BACKEND.release()
    assert trainer.losses(batch) == before
    trainer.step(batch)
    BACKEND.release()
    trainer.step(batch)
    check_taps(student.forward(batch), student_cfg, student.state_dict(), batch)


# --- the compiled training step ------------------------------------------------------------------
@pytest.fixture(scope="module")
def dropout_run():
    """Eight steps with dropout on a GD+TD objective under a warm-up schedule."""
    teacher_cfg, student_cfg = _configs(dropout=0.1)
    t_params, s_params = init_parameters(teacher_cfg, 1), init_parameters(student_cfg, 2)
    teacher = BACKEND.load_model(teacher_cfg, t_params, CPU)
    student = BACKEND.load_model(student_cfg, s_params, CPU)
    graph = build_graph([(k, 1.0, 1.0) for k in TINYBERT_KINDS], student_cfg, teacher_cfg,
                        build_mapping("uniform", 2, 4), where="test")
    lrs = np.array([2e-3, 4e-3, 6e-3, 8e-3, 8e-3, 6e-3, 4e-3, 2e-3], np.float32)
    trainer = BACKEND.trainer(student, teacher, TrainSpec(graph, OptimizerSpec(lr=8e-3), lrs, seed=5))
    batch = _batch()
    before = trainer.losses(batch)
    results = [trainer.step(batch) for _ in range(len(lrs))]
    return dict(trainer=trainer, teacher=teacher, t_params=t_params, student_cfg=student_cfg, graph=graph,
                batch=batch, before=before, results=results, lrs=lrs, student=student)


def test_losses_without_dropout_match_the_reference_before_training(dropout_run):
    run = dropout_run
    s_params = init_parameters(run["student_cfg"], 2)
    check_losses(run["before"], run["graph"], run["student_cfg"], s_params, run["teacher"].config,
                 run["t_params"], run["batch"])


def test_steps_report_every_term_total_and_the_schedules_lr(dropout_run):
    for s, result in enumerate(dropout_run["results"]):
        assert set(result) == set(TINYBERT_KINDS) | {"total", "lr"}
        assert all(isinstance(v, float) for v in result.values())
        assert result["lr"] == pytest.approx(float(dropout_run["lrs"][s]))
        assert result["total"] == pytest.approx(sum(result[k] for k in TINYBERT_KINDS), rel=1e-5)


def test_training_decreases_the_loss_and_dropout_varies_between_steps(dropout_run):
    run = dropout_run
    after = run["trainer"].losses(run["batch"])
    assert after["total"] < 0.8 * run["before"]["total"]
    # The first step sees the same parameters as `before`: only dropout can make it differ.
    assert abs(run["results"][0]["total"] - run["before"]["total"]) > 1e-3


def test_the_teacher_is_frozen_and_its_forward_has_no_dropout(dropout_run):
    run = dropout_run
    state = run["teacher"].state_dict()
    assert all(np.array_equal(state[k], run["t_params"][k]) for k in state)
    first = run["teacher"].forward(run["batch"])
    check_taps(first, run["teacher"].config, run["t_params"], run["batch"])


def test_a_resumed_trainer_reseeds_dropout_reproducibly_without_replaying_the_first_masks(dropout_run):
    """MindSpore cannot save its dropout kernels' RNG (trainer module docstring): load_state re-seeds
    every site from (seed, schedule position). The first step's loss is computed before the update,
    so from the same weights it differs only through the dropout masks."""
    from distill_engine_mindspore.trainer import dropout_seed

    run = dropout_run
    weights, state = run["student"].state_dict(), run["trainer"].state()
    assert not any(k.startswith("rng.") for k in state)
    assert dropout_seed(5, 8) != dropout_seed(5, 0) and dropout_seed(5, 8) == dropout_seed(5, 8)
    spec = run["trainer"].spec

    def first_step(load: bool) -> dict[str, float]:
        trainer = BACKEND.trainer(BACKEND.load_model(run["student_cfg"], weights, CPU), run["teacher"], spec)
        if load:
            trainer.load_state(state)
        return trainer.step(run["batch"])

    resumed, again, fresh = first_step(True), first_step(True), first_step(False)
    assert resumed == again, "the same state resumed twice must give the same run"
    assert abs(resumed["total"] - fresh["total"]) > 1e-4, "a resumed trainer replays the first step's dropout masks"
    assert resumed["lr"] == pytest.approx(float(run["lrs"][-1]))  # schedule position 8: clamped to the last rate


@pytest.fixture(scope="module")
def adamw_setup():
    teacher_cfg, student_cfg = _configs(labels=0)
    teacher = BACKEND.load_model(teacher_cfg, init_parameters(teacher_cfg, 1), CPU)
    s_params = init_parameters(student_cfg, 2)
    graph = build_graph([("attention_mse", 1.0, 1.0), ("embedding_mse", 1.0, 1.0), ("hidden_mse", 2.0, 1.0)],
                        student_cfg, teacher_cfg, build_mapping("uniform", 2, 4), where="test")
    return teacher, student_cfg, s_params, graph


# Without loss scaling the step uses MindSpore's fused AdamWeightDecay kernel (rescaled lr, eps and
# decay); with loss scaling, the written-out update that can skip an overflowed step. Both must be
# torch.optim.AdamW.
@pytest.mark.parametrize("mode, clip, loss_scale", [("graph", "global_norm", None), ("pynative", "per_parameter", None),
                                                    ("graph", "per_parameter", 1024.0)])
def test_two_adamw_steps_match_torch_adamw_on_the_same_gradients(adamw_setup, monkeypatch, mode, clip, loss_scale):
    teacher, student_cfg, s_params, graph = adamw_setup
    if mode == "pynative":  # the debugging mode computes the same numbers, uncompiled
        monkeypatch.setenv(runtime.PYNATIVE_ENV, "1")
    assert runtime.pynative() == (mode == "pynative")
    spec = OptimizerSpec(lr=1e-2, weight_decay=0.1, clip=clip, max_grad_norm=0.5)
    lrs = np.array([1e-2, 4e-3], np.float32)
    student = BACKEND.load_model(student_cfg, s_params, CPU)
    trainer = BACKEND.trainer(student, teacher, TrainSpec(graph, spec, lrs, loss_scale=loss_scale))
    assert trainer._step_cell.scaled == (loss_scale is not None)
    batch = _batch()
    params = {k: torch.tensor(v, requires_grad=True) for k, v in s_params.items()}
    groups = [{"params": [p for k, p in params.items() if not is_no_decay(k)], "weight_decay": spec.weight_decay},
              {"params": [p for k, p in params.items() if is_no_decay(k)], "weight_decay": 0.0}]
    oracle = torch.optim.AdamW(groups, lr=1.0, betas=spec.betas, eps=spec.eps)
    for s in range(len(lrs)):
        grads = trainer.gradients(batch)
        for name, p in params.items():  # the objective does not reach the pooler: None, as in torch
            p.grad = torch.tensor(grads[name]) if np.any(grads[name]) else None
        reached = [p for p in params.values() if p.grad is not None]
        if clip == "global_norm":
            torch.nn.utils.clip_grad_norm_(reached, spec.max_grad_norm)
        else:
            for p in reached:
                torch.nn.utils.clip_grad_norm_([p], spec.max_grad_norm)
        for group in oracle.param_groups:
            group["lr"] = float(lrs[s])
        oracle.step()
        assert trainer.step(batch)["lr"] == pytest.approx(float(lrs[s]))
    state = student.state_dict()
    for name, p in params.items():
        assert_close(state[name], p.detach().numpy(), f"{name} after two AdamW steps ({mode}, {clip})")
    assert np.array_equal(state["pooler.dense.weight"], s_params["pooler.dense.weight"]), \
        "a parameter the objective does not reach must not be decayed"


def test_float16_training_with_dynamic_loss_scaling_skips_overflows_and_adapts_the_scale(adamw_setup):
    from distill_engine_mindspore.trainer import MindSporeTrainer

    teacher, student_cfg, s_params, graph = adamw_setup
    student = BACKEND.load_model(student_cfg, s_params, CPU)
    spec = TrainSpec(graph, OptimizerSpec(lr=1e-2), np.full(6, 1e-2, np.float32), loss_scale=1024.0,
                     loss_scale_window=2, precision="fp16")
    # plan() offers fp16 on GPU/Ascend only; a trainer built directly runs that graph on this CPU.
    trainer = MindSporeTrainer(student, teacher, spec)
    assert trainer.half
    batch = _batch()
    before = trainer.losses(batch)
    trainer.loss_scale = 3e38  # overflows float32 once multiplied into the loss
    trainer.step(batch)
    assert trainer.skipped_steps == 1 and trainer.loss_scale == 1.5e38
    assert all(np.array_equal(v, s_params[k]) for k, v in student.state_dict().items()), "an overflow must not update"
    trainer.loss_scale = 1024.0
    trainer.step(batch)
    assert trainer.skipped_steps == 1 and trainer.loss_scale == 1024.0
    trainer.step(batch)
    assert trainer.loss_scale == 2048.0  # doubled after loss_scale_window good steps
    assert trainer.losses(batch)["total"] < before["total"]
    assert not np.array_equal(student.state_dict()["fit_dense.weight"], s_params["fit_dense.weight"])


def _five_rows():
    a, b = _batch(seed=1), _batch(seed=2)
    return {k: np.concatenate([a[k], b[k][:2]]) for k in a}


def test_precisions_fp16_on_accelerators_only_and_no_bf16():
    assert BACKEND.precisions(CPU) == ("fp32",)
    assert BACKEND.precisions(Device("gpu")) == BACKEND.precisions(Device("ascend")) == ("fp32", "fp16")
    from distill_engine.errors import BackendError
    from distill_engine_mindspore.trainer import MindSporeTrainer

    teacher, student = _configs()
    graph = build_graph([("hidden_mse", 1.0, 1.0)], student, teacher, build_mapping("uniform", 2, 4), where="t")
    models = [BACKEND.load_model(c, init_parameters(c, 0), CPU) for c in (student, teacher)]
    with pytest.raises(BackendError, match='precision "bf16": the MindSpore backend trains in "fp32" or "fp16"'):
        MindSporeTrainer(*models, TrainSpec(graph, OptimizerSpec(), np.zeros(1, np.float32), precision="bf16"))


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(setup=suite_setups())
def test_the_fp16_graph_stays_within_the_fp16_tolerance_on_a_cpu(setup):
    """plan() offers fp16 on GPU/Ascend only; the trainer runs the same float16 graph on this CPU."""
    check_precision_step(BACKEND, setup, "fp16")


def test_bf16_on_a_cpu_is_one_line_before_anything_runs(tmp_path, capsys):
    from distill_engine.cli import main
    from distill_engine.testing.fixtures import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path)
    assert main(["run", str(recipe), "--backend", "mindspore", "--set", 'run.precision="bf16"']) == 2
    err = capsys.readouterr().err.strip()
    assert err == ('error: run.precision: "bf16" (bfloat16 forwards, float32 weights and optimiser) is not served by '
                   'backend mindspore on any device; on cpu use "fp32"')
    assert not (tmp_path / "run").exists()



@pytest.mark.parametrize("chunk", [2, 5, 8])  # padded last chunk; exact division; one chunk
def test_a_teacher_forward_in_chunks_gives_the_taps_of_one_forward(chunk):
    teacher_cfg, _ = _configs()
    teacher = BACKEND.load_model(teacher_cfg, init_parameters(teacher_cfg, 3), CPU)
    tensors = teacher.tensors(_five_rows())
    whole = teacher.taps_tensors(*tensors)
    parts = teacher.taps_tensors(*tensors, chunk=chunk)
    for name, w, p in [("hidden", whole[0], parts[0]), ("scores", whole[1], parts[1]), ("values", whole[4], parts[4])]:
        assert len(w) == len(p)
        for i, (x, y) in enumerate(zip(w, p)):
            assert_close(y.asnumpy(), x.asnumpy(), f"{name}[{i}] with chunk {chunk}")
    assert_close(parts[3].asnumpy(), whole[3].asnumpy(), f"logits with chunk {chunk}")


def test_teacher_chunking_is_asked_for_by_the_environment_and_keeps_the_losses(adamw_setup, monkeypatch):
    from distill_engine.errors import BackendError
    from distill_engine_mindspore.trainer import TEACHER_CHUNK_ENV

    teacher, student_cfg, s_params, graph = adamw_setup
    spec = TrainSpec(graph, OptimizerSpec(), np.full(2, 1e-3, np.float32))
    batch = _five_rows()
    plain = BACKEND.trainer(BACKEND.load_model(student_cfg, s_params, CPU), teacher, spec)
    assert plain.teacher_chunk is None
    monkeypatch.setenv(TEACHER_CHUNK_ENV, "2")
    chunked = BACKEND.trainer(BACKEND.load_model(student_cfg, s_params, CPU), teacher, spec)
    assert chunked.teacher_chunk == 2
    expected, actual = plain.losses(batch), chunked.losses(batch)
    for kind in expected:
        assert_close(actual[kind], expected[kind], f"loss {kind} with the teacher in chunks of 2")
    monkeypatch.setenv(TEACHER_CHUNK_ENV, "zero")
    with pytest.raises(BackendError, match=TEACHER_CHUNK_ENV):
        BACKEND.trainer(BACKEND.load_model(student_cfg, s_params, CPU), teacher, spec)


# --- devices and plugin ---------------------------------------------------------------------------
def test_devices():
    assert BACKEND.device_kinds() == ("cpu", "gpu", "ascend")
    assert CPU in BACKEND.available_devices()
    BACKEND.check_device(CPU)
    for device in (Device("gpu", 0), Device("ascend", 3)):
        if device not in BACKEND.available_devices():
            with pytest.raises(DeviceError, match=str(device)):
                BACKEND.check_device(device)


def test_the_plugin_registers_without_importing_mindspore():
    code = ("import sys\n"
            "from distill_engine import plugins\n"
            "assert 'mindspore' in plugins.backend_registry()\n"
            "assert 'mindspore' not in sys.modules, 'listing backends imported mindspore'\n"
            "assert '.ckpt' in plugins.weight_readers()\n"
            "assert 'mindspore' not in sys.modules\n"
            "b = plugins.get_backend('mindspore')\n"
            "print(b.name, b.version())\n")
    env = {k: v for k, v in os.environ.items() if k != "DISTILL_ENGINE_PLUGINS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mindspore 0.1.0 (mindspore 2.10.0)" in out.stdout


# --- checkpoints ----------------------------------------------------------------------------------
@pytest.mark.parametrize("projection", ["per_entry", "paper"])
def test_ckpt_round_trip_is_bit_for_bit_and_readable_through_the_core(tmp_path, projection):
    from distill_engine.checkpoint import read_weights

    _, student = _configs(projection=projection)
    state = BACKEND.load_model(student, init_parameters(student, 4), CPU).state_dict()
    path = write_ckpt(tmp_path / "student.ckpt", state, student)
    assert [p.name for p in tmp_path.iterdir()] == ["student.ckpt"]  # no temporary file left behind
    for back in (read_ckpt(path), read_weights(path)):
        assert list(back) == list(state)
        for name, value in state.items():
            assert back[name].dtype == value.dtype and back[name].tobytes() == value.tobytes(), name
    imported = import_ckpt(path)
    assert imported.config == student and set(imported.state) == set(state)
    from distill_engine.checkpoint import load_any  # recipes' format = "mindspore", via the plugin hook

    through_core = load_any(path, "mindspore")
    assert through_core.config == student
    assert all(np.array_equal(through_core.state[k], state[k]) for k in state)


def _zoo_names(state: dict, layers: int, model: str, head: str) -> dict:
    """Canonical -> zoo names, written out independently of zoo_names.py (the test's own table)."""
    out = {}
    emb = {"embeddings.word_embeddings.weight": "embedding_lookup.embedding_table",
           "embeddings.position_embeddings.weight": "embedding_postprocessor.full_position_embedding.embedding_table",
           "embeddings.token_type_embeddings.weight": "embedding_postprocessor.token_type_embedding.embedding_table",
           "embeddings.LayerNorm.weight": "embedding_postprocessor.layernorm.gamma",
           "embeddings.LayerNorm.bias": "embedding_postprocessor.layernorm.beta"}
    for canon, zoo in emb.items():
        out[model + zoo] = state[canon]
    for i in range(layers):
        c, z = f"encoder.layer.{i}.", f"{model}encoder.layers.{i}."
        for w in ("weight", "bias"):
            for mine, theirs in (("query", "query_layer"), ("key", "key_layer"), ("value", "value_layer")):
                out[f"{z}attention.attention.{theirs}.{w}"] = state[f"{c}attention.self.{mine}.{w}"]
            out[f"{z}attention.output.dense.{w}"] = state[f"{c}attention.output.dense.{w}"]
            out[f"{z}intermediate.{w}"] = state[f"{c}intermediate.dense.{w}"]
            out[f"{z}output.dense.{w}"] = state[f"{c}output.dense.{w}"]
        for ln, zl in (("weight", "gamma"), ("bias", "beta")):
            out[f"{z}attention.output.layernorm.{zl}"] = state[f"{c}attention.output.LayerNorm.{ln}"]
            out[f"{z}output.layernorm.{zl}"] = state[f"{c}output.LayerNorm.{ln}"]
    root = model.rsplit(".", 1)[0] + "."
    out[root + "dense.weight"], out[root + "dense.bias"] = state["pooler.dense.weight"], state["pooler.dense.bias"]
    if "classifier.weight" in state:
        out[head + "dense_1.weight"], out[head + "dense_1.bias"] = state["classifier.weight"], state["classifier.bias"]
    return out


def _save_zoo(path, tensors: dict, config: BertConfig | None = None):
    import mindspore as ms

    ms.save_checkpoint([{"name": k, "data": ms.Tensor(np.asarray(v))} for k, v in tensors.items()], str(path))
    if config is not None:
        (path.parent / "config.json").write_text(json.dumps(config.to_hf_config()))
    return path


def test_zoo_tinybert_and_fine_tuned_bert_checkpoints_import_with_every_tensor_accounted_for(tmp_path):
    teacher_cfg, student_cfg = _configs(layers=(3, 2), projection="none")
    # the config.json beside a zoo file (Hugging Face's keys) names no classifier activation: it
    # reads as Hugging Face's head, "none"
    teacher_cfg = BertConfig(**{**teacher_cfg.to_dict(), "classifier_activation": "none"})
    # A GD student as TinyBERT's ModelSaveCkpt writes it (no head, no projection).
    # (a headless config.json reads as Hugging Face's head, "none": no classifier to apply it to)
    gd_cfg = BertConfig(**{**student_cfg.to_dict(), "num_labels": 0, "classifier_activation": "none"})
    gd = init_parameters(gd_cfg, 1)
    (tmp_path / "gd").mkdir()
    ck = import_ckpt(_save_zoo(tmp_path / "gd" / "tiny_bert_1_100.ckpt",
                               _zoo_names(gd, 2, "bert.tinybert_", ""), gd_cfg))
    assert ck.config == gd_cfg and ck.state.keys() == gd.keys()
    assert all(np.array_equal(ck.state[k], gd[k]) for k in gd)
    # A fine-tuned BERT teacher from the zoo's run_classifier, with optimizer state and MLM/NSP heads.
    ft = init_parameters(teacher_cfg, 2)
    tensors = _zoo_names(ft, 3, "bert.bert.bert_", "bert.")
    tensors.update({"bert.cls1.dense.weight": np.zeros((16, 16), np.float32), "bert.cls1.output_bias": np.zeros(40),
                    "bert.cls2.dense.bias": np.zeros(2, np.float32), "global_step": np.array([10], np.int32),
                    "moment1.bert.bert.dense.weight": np.zeros((16, 16), np.float32),
                    "learning_rate": np.array(1e-5, np.float32)})
    assert set(zoo_to_canonical(tensors, 3)) == set(ft)
    (tmp_path / "ft").mkdir()
    ck = import_ckpt(_save_zoo(tmp_path / "ft" / "bert_sst2.ckpt", tensors, teacher_cfg))
    assert ck.config == teacher_cfg and all(np.array_equal(ck.state[k], ft[k]) for k in ft)
    model = BACKEND.load_model(ck.config, ck.state, CPU)
    assert_close(model.predict(_batch()), reference.forward(teacher_cfg, ft, _batch()).logits, "zoo teacher logits")


def test_zoo_files_from_mindspore_1_0_name_the_postprocessor_tables_differently():
    _, student_cfg = _configs(layers=(3, 2), labels=0, projection="none")
    params = init_parameters(student_cfg, 1)
    tensors = _zoo_names(params, 2, "bert.bert.bert_", "bert.")
    p = "bert.bert.bert_embedding_postprocessor."
    tensors[p + "embedding_table"] = tensors.pop(p + "token_type_embedding.embedding_table")
    tensors[p + "full_position_embeddings"] = tensors.pop(p + "full_position_embedding.embedding_table")
    state = zoo_to_canonical(tensors, 2)
    assert state.keys() == params.keys()
    assert all(np.array_equal(state[k], params[k]) for k in params)


def test_zoo_import_names_every_missing_and_unexpected_tensor():
    _, student_cfg = _configs(layers=(3, 2), projection="none")
    tensors = _zoo_names(init_parameters(student_cfg, 1), 2, "bert.tinybert_", "")
    del tensors["bert.tinybert_encoder.layers.1.output.layernorm.gamma"]
    del tensors["dense_1.bias"]
    tensors["bert.tinybert_encoder.layers.2.intermediate.weight"] = np.zeros((12, 8), np.float32)
    tensors["bert.mystery.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError) as info:
        zoo_to_canonical(tensors, 2)
    message = str(info.value)
    for name in ("bert.tinybert_encoder.layers.1.output.layernorm.gamma", "dense_1.bias",
                 "bert.tinybert_encoder.layers.2.intermediate.weight", "bert.mystery.weight"):
        assert name in message
    assert "missing" in message and "unexpected" in message


def test_a_whole_distillation_network_checkpoint_needs_a_model_prefix():
    teacher_cfg, student_cfg = _configs(layers=(3, 2), labels=0, projection="none")
    tensors = _zoo_names(init_parameters(teacher_cfg, 1), 3, "teacher.bert_", "")
    student = init_parameters(student_cfg, 2)
    tensors.update(_zoo_names(student, 2, "bert.tinybert_", ""))
    tensors["fit_dense.weight"], tensors["fit_dense.bias"] = np.ones((16, 8), np.float32), np.ones(16, np.float32)
    with pytest.raises(CheckpointError, match="teacher.bert_.*bert.tinybert_"):
        zoo_to_canonical(tensors, 2)
    state = zoo_to_canonical(tensors, 2, prefix="bert.tinybert_")
    assert set(state) == set(student) | {"fit_dense.weight", "fit_dense.bias"}


def test_unreadable_ckpt_files_are_checkpoint_errors(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        read_ckpt(bad)
    with pytest.raises(CheckpointError, match="not found"):
        read_ckpt(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="config.json"):
        import_ckpt(_save_zoo(tmp_path / "noconfig.ckpt", {"x": np.zeros(2, np.float32)}))
