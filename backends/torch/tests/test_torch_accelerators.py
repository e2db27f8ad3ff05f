"""The PyTorch backend on a GPU, checked on a CPU where a fake can stand in (issue #32): host reads
per step, kernels per clipping, bf16 on a faked V100, the CUDA generator of a run that moved from
cuda:1 to cuda:0, and leaving the process group at the end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from distill_engine.backend import TrainSpec, rng_key
from distill_engine.bert import init_parameters
from distill_engine.device import Device
from distill_engine.errors import RecipeError
from distill_engine.graph import build_graph, build_mapping
from distill_engine.optim import OptimizerSpec
from distill_engine.precision import check_precision
from distill_engine.testing.fixtures import tiny_config
from distill_engine_torch.backend import TorchBackend, TorchProcessGroup

BACKEND = TorchBackend()
CPU = Device("cpu")


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched while it is active, by name. Reads of the tensors in
    `host_resident` are left out: AdamW keeps its step counters on the host (capturable=False) on
    every device, so reading them makes nobody wait."""

    def __init__(self, host_resident=()):
        super().__init__()
        self.ops: list[str] = []
        self.host = {t.data_ptr() for t in host_resident}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket.__name__)
        if not (name == "_local_scalar_dense" and args[0].data_ptr() in self.host):
            self.ops.append(name)
        return func(*args, **(kwargs or {}))

    def count(self, name: str) -> int:
        return self.ops.count(name)


def _trainer(clip="global_norm", loss_scale=None, precision="fp32", layers=2):
    teacher = tiny_config(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    student = tiny_config(num_labels=2, hidden_size=8, num_hidden_layers=layers, intermediate_size=12,
                          projection="shared", projection_dim=16)
    graph = build_graph([("attention_mse", 1, 1), ("hidden_mse", 1, 1), ("soft_cross_entropy", 1, 1)], student,
                        teacher, build_mapping("uniform", layers, 4), where="t")
    spec = TrainSpec(graph, OptimizerSpec(lr=1e-3, clip=clip, max_grad_norm=0.05), np.full(4, 1e-3, np.float32),
                     seed=3, loss_scale=loss_scale, precision=precision)
    model = BACKEND.load_model(student, init_parameters(student, 0), CPU)
    trainer = BACKEND.trainer(model, BACKEND.load_model(teacher, init_parameters(teacher, 1), CPU), spec)
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(5, 30, (4, 10)).astype(np.int32), "token_type_ids": np.zeros((4, 10), np.int32),
             "attention_mask": np.ones((4, 10), np.int32), "labels": np.array([0, 1, 1, 0], np.int32)}
    return model, trainer, batch


@pytest.mark.parametrize("loss_scale", [None, 1024.0])
def test_a_step_reads_the_device_at_most_once(loss_scale):
    """Each host read (float(t), t.item(), GradScaler.get_scale()) is an aten._local_scalar_dense,
    and on a GPU a wait for every kernel queued so far. With fp16's scaler, GradScaler.step reads
    its inf flag itself (to skip optimizer.step); the trainer adds none of its own then."""
    _, trainer, batch = _trainer(loss_scale=loss_scale)
    trainer.step(batch)  # the first step creates Adam's state
    steps = [st["step"] for st in trainer.optimizer.state.values()]
    assert steps and all(t.device.type == "cpu" for t in steps)
    with OpCounter(host_resident=steps) as counter:
        values = trainer.step(batch)
    assert counter.count("_local_scalar_dense") <= 1, counter.count("_local_scalar_dense")
    assert set(values) == {"attention_mse", "hidden_mse", "soft_cross_entropy", "total", "lr"}
    assert all(isinstance(v, float) for v in values.values())
    assert values["total"] == pytest.approx(values["attention_mse"] + values["hidden_mse"]
                                            + values["soft_cross_entropy"], rel=1e-6)


def test_per_parameter_clipping_is_a_few_multi_tensor_kernels_with_the_same_numbers():
    model, trainer, batch = _trainer(clip="per_parameter", layers=2)
    _, many, _ = _trainer(clip="per_parameter", layers=4)
    for t in (trainer, many):
        t.optimizer.zero_grad(set_to_none=True)
        t._objective(batch, train=False)[0].backward()
    expected, before = {}, {}
    for name, p in model.module.named_parameters():  # what clip_grad_norm_ gives, one tensor at a time
        if p.grad is not None:
            g = torch.nn.Parameter(p.detach().clone())
            g.grad = p.grad.clone()
            before[name] = float(p.grad.norm())
            torch.nn.utils.clip_grad_norm_([g], trainer.spec.optimizer.max_grad_norm)
            expected[name] = g.grad
    counts = []
    for t in (trainer, many):
        with OpCounter() as counter:
            t._clip()
        counts.append(len(counter.ops))
    with_grads = sum(p.grad is not None for p in many.params)
    assert counts[0] == counts[1] <= 12, f"{counts} operators for {with_grads} gradients: not independent of their count"
    assert with_grads > 40
    for name, p in model.module.named_parameters():
        if name in expected:
            assert torch.equal(p.grad, expected[name]), f"{name}: not clip_grad_norm_'s numbers"
    assert max(before.values()) > 0.05, "no gradient was above max_grad_norm: nothing was clipped"


def _fake_gpus(monkeypatch, capabilities):
    """torch sees GPUs of these compute capabilities; torch.cuda.is_bf16_supported says yes to
    all, as it does for a V100 (emulation counts) and about the current device only."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capabilities[index or 0])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def test_bf16_refused_on_a_v100_and_checked_on_the_named_device(monkeypatch):
    _fake_gpus(monkeypatch, [(7, 0), (8, 0)])  # gpu:0 a V100, gpu:1 an A100
    assert BACKEND.precisions(Device("gpu", 0)) == ("fp32", "fp16")
    assert BACKEND.precisions(Device("gpu", 1)) == ("fp32", "bf16", "fp16")
    with pytest.raises(RecipeError, match=r'^run.precision: "bf16" .* on gpu:0 use "fp32" or "fp16"$'):
        check_precision(BACKEND, Device("gpu", 0), "bf16")
    check_precision(BACKEND, Device("gpu", 1), "bf16")


def test_a_cuda_generator_saved_on_cuda1_is_restored_on_cuda0(monkeypatch):
    """The run state of a run on cuda:1 holds "rng.torch.cuda.1"; resumed on cuda:0 that generator
    must drive cuda:0's dropout (before: it was skipped as another device's, and dropout restarted)."""
    generators = {0: torch.tensor([0, 0, 0], dtype=torch.uint8), 1: torch.tensor([7, 8, 9], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: generators[torch.device(device).index].clone())

    def set_rng_state(value, device):
        generators[torch.device(device).index] = value.clone()

    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    saver, loader = (_trainer()[1] for _ in range(2))
    saver.student.torch_device = torch.device("cuda", 1)  # only its RNG keys and generator are asked for
    state = saver.state()
    assert rng_key("torch", "cuda", 1) in state
    loader.student.torch_device = torch.device("cuda", 0)
    loader.load_state(state)
    assert generators[0].tolist() == [7, 8, 9], "cuda:0's generator was not restored from cuda:1's"


def test_the_process_group_is_left_at_the_end(monkeypatch):
    destroyed = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda *a: destroyed.append(a))
    TorchProcessGroup(0, 2, 0, None).close()
    assert destroyed == [()]


def test_the_run_command_closes_its_group(monkeypatch, tmp_path):
    """`distill-engine run` under a launcher: the group's close() runs after the run, even a failed one."""
    from distill_engine.cli import run as run_command

    closed = []

    class Group:
        def close(self):
            closed.append(True)

    class Failing:
        def __init__(self, *a, **k):
            pass

        def run(self):
            raise RuntimeError("a rank failed")

    def load_plan(args, join=False):
        args.group = Group()
        return None

    monkeypatch.setattr(run_command, "load_plan", load_plan)
    import distill_engine.runner

    monkeypatch.setattr(distill_engine.runner, "Runner", Failing)
    args = type("Args", (), {"nproc": 0, "resume": False, "overwrite": False, "no_progress": True, "argv": [],
                             "progress_every": None})()
    with pytest.raises(RuntimeError):
        run_command.command(args)
    assert closed == [True]

