"""The span task's loss kinds in MindSpore ops; formulas and numpy references in
distill_engine.tasks.span.losses. Called as `impl(student, teacher, mask, labels, params)` with the
span head's logits [B, L, 2], the mask [B, L] (or None) and the labels [B, 2] (the answer's start and
end positions), traced into the compiled step like the built-in kinds. As those logit losses do
(losses.py), they compute in `runtime.WIDE` (float64 on a CPU) with softmax written out (MindSpore's
own kernels err by ~1e-6)."""

from __future__ import annotations

import mindspore as ms
from mindspore import ops

from distill_engine.tasks.span.losses import MASKED
from distill_engine_mindspore.losses import _f32, _log_softmax, _wide


def _log_probs(z, mask, temp=1.0):
    """log softmax over positions as [B, 2, L] (start, end), padded positions out with a mask."""
    z = ops.transpose(_wide(z), (0, 2, 1)) / temp
    if mask is not None:
        z = ops.select(ops.broadcast_to(_wide(mask)[:, None, :] > 0, z.shape), z, ops.full_like(z, MASKED))
    return _log_softmax(z)


def span_cross_entropy(student, teacher, mask, labels, params):
    logp = _log_probs(student[0], mask)
    # OneHot has no float64 kernel: the 0/1 values are exact in float32
    onehot = ops.one_hot(ops.cast(labels, ms.int32), logp.shape[-1], ops.ones((), ms.float32),
                         ops.zeros((), ms.float32))
    return _f32(-(_wide(onehot) * logp).sum(-1).mean())


def span_soft_cross_entropy(student, teacher, mask, labels, params):
    (temp,) = params
    log_s, log_t = _log_probs(student[0], mask, temp), _log_probs(teacher[0], mask, temp)
    return _f32((-ops.exp(log_t) * log_s).sum(-1).mean())


def span_kl_divergence(student, teacher, mask, labels, params):
    (temp,) = params
    log_s, log_t = _log_probs(student[0], mask, temp), _log_probs(teacher[0], mask, temp)
    return _f32(temp * temp * (ops.exp(log_t) * (log_t - log_s)).sum(-1).mean())
