"""The MindSpore backend off the CPU, checked on a CPU with the accelerator faked (issue #32).

Each test fakes what a GPU or Ascend machine would answer (the current device, the plugin-load
error, the SoC, the overflow flag) and checks the backend's side of it: no float64 off the CPU,
the overflow check through `mindspore.amp.all_finite`, the plugin's own load error, msrun's device
binding, the explicit compile backend, and the 910A's precisions. The computations themselves run
on this CPU, eagerly (PyNative), where a monkeypatched MindSpore function is seen at every call.
"""

from __future__ import annotations

import types

import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

from distill_engine.backend import TrainSpec
from distill_engine.bert import BertConfig, init_parameters
from distill_engine.device import Device
from distill_engine.errors import DeviceError, RecipeError
from distill_engine.graph import build_graph, build_mapping
from distill_engine.optim import OptimizerSpec
from distill_engine.precision import check_precision
from distill_engine_mindspore import runtime
from distill_engine_mindspore.backend import MindSporeBackend, MindSporeModel
from distill_engine_mindspore.trainer import MindSporeTrainer

BACKEND = MindSporeBackend()


def _config(layers: int, width: int, labels: int = 2) -> BertConfig:
    return BertConfig(vocab_size=30, hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=2 * width, max_position_embeddings=8, initializer_range=0.2,
                      num_labels=labels, projection="shared" if width != 16 else "none",
                      projection_dim=16 if width != 16 else 0)


BATCH = {"input_ids": np.array([[2, 5, 7, 0], [3, 4, 0, 0]], np.int32), "token_type_ids": np.zeros((2, 4), np.int32),
         "attention_mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.int32), "labels": np.array([0, 1], np.int32)}


def _fake_target(monkeypatch, target: str, device_id: int = 0) -> list:
    """MindSpore answers that this process runs on `target`; set_device calls are recorded."""
    calls = []
    monkeypatch.setattr(runtime, "WIDE", runtime.WIDE)  # restored after the test: graphs of later tests read it
    monkeypatch.setattr(ms, "get_current_device", lambda: types.SimpleNamespace(device_target=target,
                                                                                 device_id=device_id))
    monkeypatch.setattr(ms, "set_device", lambda *args: calls.append(args))
    return calls


def _casts_in_a_td2_run(monkeypatch, device: Device) -> list:
    """The dtypes `ops.cast` is asked for while a model on `device` predicts and a TD2 trainer
    (soft cross-entropy, KL, hard cross-entropy: the logit losses) steps and evaluates, eagerly."""
    monkeypatch.setenv(runtime.PYNATIVE_ENV, "1")
    seen = []
    cast = ops.cast
    monkeypatch.setattr(ops, "cast", lambda x, dtype: seen.append(dtype) or cast(x, dtype))
    teacher_cfg, student_cfg = _config(2, 16), _config(1, 8)
    teacher = MindSporeModel(teacher_cfg, init_parameters(teacher_cfg, 1), device)
    student = MindSporeModel(student_cfg, init_parameters(student_cfg, 2), device)
    graph = build_graph([("soft_cross_entropy", 1.0, 1.0), ("kl_divergence", 1.0, 2.0),
                         ("hard_cross_entropy", 1.0, 1.0)], student_cfg, teacher_cfg,
                        build_mapping("uniform", 1, 2), where="test")
    trainer = MindSporeTrainer(student, teacher, TrainSpec(graph, OptimizerSpec(lr=1e-3), np.full(2, 1e-3, np.float32)))
    student.predict(BATCH)
    trainer.step(BATCH)
    trainer.losses(BATCH)
    return seen


def test_no_float64_off_the_cpu_and_float64_kept_on_it(monkeypatch):
    _fake_target(monkeypatch, "GPU")
    seen = _casts_in_a_td2_run(monkeypatch, Device("gpu", 0))
    assert runtime.WIDE == ms.float32
    assert seen and ms.float64 not in seen, "a GPU/Ascend process must not compute in float64"
    assert ms.float32 in seen  # the pooler's tanh and the logit losses went through the wide cast
    # the same instrumentation on the CPU sees float64: the exact-parity path stays
    monkeypatch.undo()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime, "WIDE", runtime.WIDE)
        assert ms.float64 in _casts_in_a_td2_run(mp, Device("cpu"))
        assert runtime.WIDE == ms.float64


def test_overflow_is_read_through_amp_all_finite(monkeypatch):
    """A 910A saturates instead of producing inf: the step must ask amp.all_finite (the float-status
    registers there), which here answers "overflow" while every gradient is finite."""
    monkeypatch.setenv(runtime.PYNATIVE_ENV, "1")
    asked = []

    def saturated(grads):
        asked.append(len(grads))
        return ms.Tensor(False)

    monkeypatch.setattr(ms.amp, "all_finite", saturated)
    teacher_cfg, student_cfg = _config(2, 16), _config(1, 8)
    teacher = BACKEND.load_model(teacher_cfg, init_parameters(teacher_cfg, 1), Device("cpu"))
    params = init_parameters(student_cfg, 2)
    student = BACKEND.load_model(student_cfg, params, Device("cpu"))
    graph = build_graph([("hidden_mse", 1.0, 1.0)], student_cfg, teacher_cfg, build_mapping("uniform", 1, 2),
                        where="test")
    trainer = MindSporeTrainer(student, teacher, TrainSpec(graph, OptimizerSpec(lr=1e-2), np.full(2, 1e-2, np.float32),
                                                           loss_scale=1024.0, precision="fp16"))
    trainer.step(BATCH)
    assert asked, "the overflow check did not go through mindspore.amp.all_finite"
    assert trainer.skipped_steps == 1 and trainer.loss_scale == 512.0
    assert all(np.array_equal(v, params[k]) for k, v in student.state_dict().items()), "an overflow must not update"


def test_the_plugins_own_load_error_is_reported(monkeypatch):
    error = ("Load dynamic library: libmindspore_gpu.so.11.6 failed. libcudnn.so.8: cannot open shared object file: "
             "No such file or directory\nLoad dynamic library: libmindspore_ascend.so.2 failed. libge_runner.so: "
             "cannot open shared object file\n")
    context = types.SimpleNamespace(is_pkg_support_device=lambda target: target == "CPU",
                                    load_plugin_error=lambda: error)
    import mindspore._c_expression as c_expression

    monkeypatch.setattr(c_expression, "MSContext", types.SimpleNamespace(get_instance=lambda: context))
    monkeypatch.setattr(runtime, "available_devices", lambda: [Device("cpu")])
    with pytest.raises(DeviceError) as info:
        BACKEND.check_device(Device("gpu", 0))
    message = str(info.value)
    assert "\n" not in message
    assert 'device "gpu:0" is not available' in message
    assert "GPU plugin did not load: Load dynamic library: libmindspore_gpu.so.11.6 failed. libcudnn.so.8" in message
    assert "libge_runner" not in message  # the Ascend plugin's line belongs to ascend:N
    assert "libge_runner.so" in str(pytest.raises(DeviceError, BACKEND.check_device, Device("ascend", 1)).value)


def test_msrun_binding_stands_and_activate_does_not_rebind(monkeypatch):
    """Under msrun, init() bound this worker to Ascend 0 (ASCEND_RT_VISIBLE_DEVICES shows it one
    NPU) while the plan says ascend:<local rank>: the launcher's binding is kept."""
    calls = _fake_target(monkeypatch, "Ascend", 0)
    modes = []
    from mindspore.device_context.ascend import op_precision

    monkeypatch.setattr(op_precision, "precision_mode", modes.append)
    monkeypatch.setenv("MS_ROLE", "MS_WORKER")
    runtime.activate(Device("ascend", 3))
    assert calls == [] and runtime.WIDE == ms.float32
    assert modes == ["must_keep_origin_dtype"]  # fp32 stays float32 in the Cube units
    monkeypatch.delenv("MS_ROLE")
    runtime.activate(Device("ascend", 3))  # outside msrun the recipe's index is asked for
    assert calls == [("Ascend", 3)]
    monkeypatch.setattr(runtime, "ascend_soc", lambda: "ascend910")  # a 910A: float16 Cube units only
    runtime.activate(Device("ascend", 0))
    assert modes[-1] == "allow_fp32_to_fp16"


def test_graphs_name_their_compile_backend(monkeypatch):
    seen = []
    monkeypatch.setattr(ms, "jit", lambda cell, **options: seen.append(options) or cell)
    monkeypatch.delenv(runtime.PYNATIVE_ENV, raising=False)
    runtime.Graph(ops.Abs())
    assert seen == [{"backend": "ms_backend"}]


def test_a_910a_trains_in_fp16_only_and_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(runtime, "ascend_soc", lambda: "ascend910")
    assert BACKEND.precisions(Device("ascend")) == ("fp16",)
    with pytest.raises(RecipeError, match=r'^run.precision: "fp32" .*on ascend:0 use "fp16"$'):
        check_precision(BACKEND, Device("ascend"), "fp32")
    monkeypatch.setattr(runtime, "ascend_soc", lambda: "ascend910b1")
    assert BACKEND.precisions(Device("ascend")) == ("fp32", "fp16")
