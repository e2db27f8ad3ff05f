"""The token task's loss kinds in MindSpore ops; formulas and numpy references in
distill_engine.tasks.token.losses. Called as `impl(student, teacher, mask, labels, params)` with the
token head's logits [B, L, C] and the per-position labels [B, L] (-100: a position left out), traced
into the compiled step like the built-in kinds. As those logit losses do (losses.py), they compute in
`runtime.WIDE` (float64 on a CPU) with softmax written out (MindSpore's own kernels err by ~1e-6)."""

from __future__ import annotations

import mindspore as ms
from mindspore import ops

from distill_engine.tasks.token.encoding import IGNORE_LABEL
from distill_engine_mindspore.losses import _f32, _wide, _log_softmax


def _over_words(per_position, labels):
    """sum over the positions whose label is not -100 / their count (0 when there are none), in runtime.WIDE."""
    m = _wide(labels != IGNORE_LABEL)
    return (per_position * m).sum() / ops.maximum(m.sum(), 1.0)


def token_cross_entropy(student, teacher, mask, labels, params):
    logits = student[0]
    labels = ops.cast(labels, ms.int32)
    safe = ops.select(labels == IGNORE_LABEL, ops.zeros_like(labels), labels)
    # OneHot has no float64 kernel: the 0/1 values are exact in float32
    onehot = ops.one_hot(safe, logits.shape[-1], ops.ones((), ms.float32), ops.zeros((), ms.float32))
    return _f32(_over_words(-(_wide(onehot) * _log_softmax(_wide(logits))).sum(-1), labels))


def token_soft_cross_entropy(student, teacher, mask, labels, params):
    (temp,) = params
    target = ops.exp(_log_softmax(_wide(teacher[0]) / temp))
    return _f32(_over_words((-target * _log_softmax(_wide(student[0]) / temp)).mean(-1), labels))


def token_kl_divergence(student, teacher, mask, labels, params):
    (temp,) = params
    log_t, log_s = _log_softmax(_wide(teacher[0]) / temp), _log_softmax(_wide(student[0]) / temp)
    return _f32(temp * temp * _over_words((ops.exp(log_t) * (log_t - log_s)).sum(-1), labels))
