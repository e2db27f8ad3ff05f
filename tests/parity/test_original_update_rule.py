"""Step for step with the original PyTorch TinyBERT: each installed training backend against a numpy
re-statement of the original's update rule, for a few TD1 steps of tiny models.

The original (huawei-noah/Pretrained-Language-Model, TinyBERT/task_distill.py with
pytorch_pretrained_bert's `BertAdam`) trains TD1 with `nn.Embedding(padding_idx=0)` (the [PAD] row
gets no gradient), per-parameter gradient clipping inside the optimiser, and Adam without bias
correction. The engine reaches that with `TrainSpec(freeze_pad_embedding=True)` and
`OptimizerSpec(clip="per_parameter", bias_correction=False)` (recipes/tinybert_original.toml).
`bert_adam_step` below is written from the original's code, not from `distill_engine.reference`.

The one difference left, on purpose: torch's `clip_grad_norm_` (which the original calls) scales a
gradient by max_norm / (norm + 1e-6) when that is below 1; the engine scales by
max_norm / max(norm, max_norm), the rule of MindSpore's clip_by_global_norm, for both backends. On a
clipped tensor the two scales differ by a factor 1 - 1e-6/norm, at most 2e-5 relative here
(max_norm 0.05; 22-23 of the 39 trained tensors are clipped at each step). Adam's m / (sqrt(v) + eps)
is invariant to a gradient's scale but for eps, so this moves a parameter by at most ~2e-5 of one
step: measured, the numpy update with the torch rule and with the engine's rule differ by 7.1e-8
after 3 steps. The backends' parameters differ from this test's numpy by at most 1.3e-7 (torch) and
1.7e-7 (MindSpore), on LayerNorm weights near 1 (float32 rounding: 6e-8 per operation there).
Parameters are compared at 1e-5 relative + 1e-7 absolute: ~50x above those differences for
weights near 1, and 300x below BertAdam's first step (lr (1-b1)/sqrt(1-b2) = 3.2e-3), so a wrong
rule (bias correction, decay of a bias, a trained pad row, a missed clip) fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from distill_engine.backend import TrainSpec
from distill_engine.device import Device
from distill_engine.graph import build_graph, build_mapping
from distill_engine.optim import OptimizerSpec
from distill_engine.plugins import get_backend
from distill_engine.testing.conformance import assert_close
from test_cross_backend import _setup, _training_backends

CPU = Device("cpu")
STEPS = 3
LR, BETAS, EPS, WEIGHT_DECAY, MAX_GRAD_NORM = 1e-3, (0.9, 0.999), 1e-6, 0.01, 0.05
PAD = 0  # pytorch_pretrained_bert's BertEmbeddings: nn.Embedding(vocab_size, hidden_size, padding_idx=0)
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
RTOL, ATOL = 1e-5, 1e-7


BACKENDS = _training_backends()
pytestmark = pytest.mark.skipif(not BACKENDS, reason="needs a training backend installed (torch or mindspore)")


# --- the original's optimiser, in numpy -------------------------------------------------------
def original_no_decay(name: str) -> bool:
    """task_distill.py: no_decay = ['bias', 'LayerNorm.bias', 'LayerNorm.weight'], matched as substrings."""
    return any(nd in name for nd in ("bias", "LayerNorm.bias", "LayerNorm.weight"))


def torch_clip_grad_norm(grad: np.ndarray, max_norm: float) -> np.ndarray:
    """torch.nn.utils.clip_grad_norm_ on one tensor: scale by max_norm / (norm + 1e-6) when below 1."""
    coef = max_norm / (np.sqrt(np.sum(grad * grad)) + 1e-6)
    return grad * coef if coef < 1 else grad


def bert_adam_step(params: dict, grads: dict, state: dict, lr: float) -> dict:
    """One `BertAdam.step()` (schedule 'none', as TD1 runs it): for every parameter with a gradient,

        clip_grad_norm_(p, max_grad_norm)
        next_m.mul_(beta1).add_(1 - beta1, grad)
        next_v.mul_(beta2).addcmul_(1 - beta2, grad, grad)
        update = next_m / (next_v.sqrt() + e)
        if weight_decay > 0: update += weight_decay * p.data
        p.data.add_(-lr * update)

    A parameter the objective does not reach has no gradient (None) and is skipped."""
    b1, b2 = BETAS
    out = dict(params)
    for name, g in grads.items():
        g = torch_clip_grad_norm(np.asarray(g, np.float64), MAX_GRAD_NORM)
        m = state.setdefault("next_m", {}).get(name, 0.0)
        v = state.setdefault("next_v", {}).get(name, 0.0)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state["next_m"][name], state["next_v"][name] = m, v
        p = np.asarray(params[name], np.float64)
        update = m / (np.sqrt(v) + EPS)
        if not original_no_decay(name):
            update = update + WEIGHT_DECAY * p
        out[name] = p - lr * update
    return out


# --- the engine, set up as the original -------------------------------------------------------
# test_cross_backend's tiny pair (dropout 0, a shared projection) and its fixed-length batch padded
# with id 0; the student's pad_token_id is 0 (BertConfig's default), as in the original.


@pytest.mark.parametrize("name", BACKENDS)
def test_td1_steps_follow_the_original_bert_adam(name):
    backend = get_backend(name)
    teacher, t_params, student, s_params, batch = _setup()
    assert student.pad_token_id == PAD and np.any(batch["input_ids"] == PAD), "the batch must hold [PAD] tokens for the pad row to matter"
    graph = build_graph([("attention_mse", 1.0, 1.0), ("hidden_mse", 1.0, 1.0), ("embedding_mse", 1.0, 1.0)],
                        student, teacher, build_mapping("uniform", 2, 4), where="original")
    opt = OptimizerSpec(lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY, clip="per_parameter",
                        max_grad_norm=MAX_GRAD_NORM, bias_correction=False)
    model = backend.load_model(student, s_params, CPU)
    trainer = backend.trainer(model, backend.load_model(teacher, t_params, CPU),
                              TrainSpec(graph, opt, np.full(STEPS, LR, np.float32), freeze_pad_embedding=True))
    expected, state, clipped = dict(s_params), {}, set()
    for step in range(STEPS):
        grads = trainer.gradients(batch)
        pad_row = grads[WORD_EMBEDDINGS][PAD]
        assert np.all(pad_row == 0), f"step {step}: the [PAD] row's gradient is {pad_row}, not exactly 0"
        reached = {k: g for k, g in grads.items() if np.any(g != 0)}  # the original's grad-is-not-None
        clipped |= {k for k, g in reached.items() if np.linalg.norm(g) > MAX_GRAD_NORM}
        expected = bert_adam_step(expected, reached, state, LR)
        result = trainer.step(batch)
        assert result["lr"] == pytest.approx(LR)
        actual = model.state_dict()
        for param in sorted(reached):
            assert_close(actual[param], expected[param], f"{name}: {param} after step {step + 1} of BertAdam",
                         rtol=RTOL, atol=ATOL)
    # the check means something: some tensors were clipped and some not, the pad row only decayed
    assert clipped and clipped != set(reached), f"clipped tensors: {sorted(clipped)}"
    decay = (1 - LR * WEIGHT_DECAY) ** STEPS
    assert_close(model.state_dict()[WORD_EMBEDDINGS][PAD], s_params[WORD_EMBEDDINGS][PAD] * decay,
                 f"{name}: the [PAD] row after {STEPS} steps (weight decay only)", rtol=RTOL, atol=ATOL)
    untouched = set(s_params) - set(reached)
    assert {"pooler.dense.weight", "classifier.weight"} <= untouched, "TD1 reaches neither pooler nor head"
    for param in untouched:
        assert np.array_equal(model.state_dict()[param], s_params[param]), f"{name}: {param} moved without a gradient"
