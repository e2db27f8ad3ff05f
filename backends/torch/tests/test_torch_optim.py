"""The fused and multi-tensor optimiser kernels (distill_engine_torch.optim) against the per-tensor
path they replace: "foreach" bit for bit, "fused" within float32 rounding, BertAdam without bias
correction against the numpy reference, per-parameter clipping bit for bit, whole training steps."""

import attrs
import numpy as np
import pytest
import torch
from test_torch_precision import _setup, _trainer

from distill_engine.errors import BackendError
from distill_engine.optim import OptimizerSpec
from distill_engine.reference import adamw_step
from distill_engine_torch.optim import KERNEL_ENV, KERNELS, clip_each_, kernel_for, make_optimizer

SHAPES = [(30, 8), (8,), (8, 8), (1,), (12, 8), (12,)]
LR, BETAS, EPS, WD = 1e-2, (0.9, 0.999), 1e-6, 0.01


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]


def _grads(step, scale=1.0):
    g = torch.Generator().manual_seed(100 + step)
    # the last parameter gets no gradient at step 1: skipped (no state, no decay), as AdamW skips it
    return [None if (i == len(SHAPES) - 1 and step == 1) else torch.randn(s, generator=g) * scale * (i + 1)
            for i, s in enumerate(SHAPES)]


def _run(kernel, bias_correction, steps=3):
    params = _params()
    groups = [{"params": params[::2], "weight_decay": WD}, {"params": params[1::2], "weight_decay": 0.0}]
    opt = make_optimizer(groups, lr=LR, betas=BETAS, eps=EPS, bias_correction=bias_correction, kernel=kernel)
    for step in range(steps):
        for p, g in zip(params, _grads(step)):
            p.grad = g
        opt.step()
    return params, opt


@pytest.mark.parametrize("bias_correction", [True, False])
def test_foreach_is_the_per_tensor_path_bit_for_bit_and_fused_within_rounding(bias_correction):
    loop, loop_opt = _run("for-loop", bias_correction)
    foreach, _ = _run("foreach", bias_correction)
    fused, fused_opt = _run("fused", bias_correction)
    for a, b, c in zip(loop, foreach, fused):
        assert torch.equal(a, b)
        # a few float32 ulp of parameters of magnitude ~3 (the kernel groups its products differently)
        assert (a - c).abs().max().item() <= 4e-6 * max(1.0, a.abs().max().item())
    # the same state for the trainer's neutral state and GradScaler: AdamW's keys, counts per tensor
    for p_loop, p_fused in zip(loop, fused):
        s_loop, s_fused = loop_opt.state[p_loop], fused_opt.state[p_fused]
        assert set(s_loop) == set(s_fused) == {"step", "exp_avg", "exp_avg_sq"}
        assert float(s_loop["step"]) == float(s_fused["step"])
    assert float(loop_opt.state[loop[-1]]["step"]) == 2  # the step without a gradient was skipped


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bias_correction", [True, False])
def test_each_kernel_is_the_reference_rule(kernel, bias_correction):
    """Every kernel against distill_engine.reference.adamw_step in float64: the fused BertAdam (the
    AdamW kernel with t = 2^40) really has no bias correction, which its first step (3.16x AdamW's
    with these betas) would show."""
    params, _ = _run(kernel, bias_correction)
    spec = OptimizerSpec(lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, bias_correction=bias_correction)
    names = [str(i) for i in range(len(SHAPES))]
    ref = {n: p.detach().numpy().astype(np.float64) for n, p in zip(names, _params())}
    state = {"m": {}, "v": {}}
    step_of = dict.fromkeys(names, 0)
    for step in range(3):
        grads = dict(zip(names, _grads(step)))
        for n, g in grads.items():
            if g is None:
                continue
            # one tensor at a time: a parameter skipped once has its own step count
            sub = {"step": step_of[n], "m": {n: state["m"].get(n, 0.0)}, "v": {n: state["v"].get(n, 0.0)}}
            ref[n] = adamw_step({n: ref[n]}, {n: g.numpy()}, sub, LR, spec, lambda name: int(name) % 2 == 1)[n]
            step_of[n], state["m"][n], state["v"][n] = sub["step"], sub["m"][n], sub["v"][n]
    for n, p in zip(names, params):
        np.testing.assert_allclose(p.detach().numpy(), ref[n], rtol=1e-5, atol=1e-6, err_msg=f"{kernel} parameter {n}")


def test_per_parameter_clipping_is_clip_grad_norm_on_each_tensor_bit_for_bit():
    gen = torch.Generator().manual_seed(7)
    for trial in range(20):
        # norms from 1e-4 to 1e3 around max_norm 1: some clipped, some not, one without a gradient
        grads = [torch.randn(s, generator=gen) * 10.0 ** (trial % 8 - 4) * (i + 1) for i, s in enumerate(SHAPES)]
        grads[trial % len(SHAPES)] = None
        clipped = {}
        for kernel in ("for-loop", "foreach"):
            params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
            for p, g in zip(params, grads):
                p.grad = None if g is None else g.clone()
            clip_each_(params, 1.0, kernel)
            clipped[kernel] = [p.grad for p in params]
        for a, b in zip(clipped["for-loop"], clipped["foreach"]):
            assert (a is None and b is None) or torch.equal(a, b)
    assert any(g is not None and g.norm() > 1.0 for g in grads)  # the last trial clipped something


def test_the_kernel_comes_from_the_environment_and_a_wrong_name_is_refused(monkeypatch):
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    assert kernel_for(torch.device("cpu")) == "fused"
    assert kernel_for(torch.device("meta")) in ("foreach", "for-loop")  # no fused kernel there
    monkeypatch.setenv(KERNEL_ENV, "for-loop")
    assert kernel_for(torch.device("cpu")) == "for-loop"
    monkeypatch.setenv(KERNEL_ENV, "fast")
    with pytest.raises(BackendError, match=f'{KERNEL_ENV}="fast".*fused, foreach, for-loop'):
        kernel_for(torch.device("cpu"))


def _train(kernel, bias_correction, clip, monkeypatch, steps=4):
    """A few steps of test_torch_precision's tiny distillation (dropout on: every trainer seeds the
    same masks) with `kernel`; the final weights."""
    monkeypatch.setenv(KERNEL_ENV, kernel)
    student, s_params, teacher, t_params, spec, batch = _setup(lr=1e-2, steps=steps)
    spec = attrs.evolve(spec, optimizer=OptimizerSpec(lr=1e-2, clip=clip, max_grad_norm=0.05,
                                                      bias_correction=bias_correction))
    model, trainer = _trainer(student, s_params, teacher, t_params, spec)
    assert trainer.kernel == kernel
    for _ in range(steps):
        trainer.step(batch)
    return model.state_dict()


@pytest.mark.parametrize(("bias_correction", "clip"), [(True, "global_norm"), (False, "per_parameter")])
def test_training_steps_agree_across_kernels(bias_correction, clip, monkeypatch):
    loop = _train("for-loop", bias_correction, clip, monkeypatch)
    foreach = _train("foreach", bias_correction, clip, monkeypatch)
    fused = _train("fused", bias_correction, clip, monkeypatch)
    assert all(np.array_equal(loop[n], foreach[n]) for n in loop)
    worst = max(float(np.max(np.abs(loop[n] - fused[n]))) for n in loop)
    assert worst < 1e-5  # float32 rounding of the update, against steps of lr 1e-2
