"""The distillation loss terms in MindSpore ops, one function per kind of LOSS_KINDS (formulas there).

Traced into the compiled step: kind, pairs and temperature are compile-time constants (plain Python
values, not the LossTerm object), the tensors are the student's and teacher's taps as
`BertCell.taps` returns them.
"""

from __future__ import annotations

import mindspore as ms
from mindspore import ops

from distill_engine.reference import ATTENTION_ZERO_BELOW


def _zero_masked(scores):
    return ops.select(scores <= ATTENTION_ZERO_BELOW, ops.zeros_like(scores), scores)


def _f64(x):
    return ops.cast(x, ms.float64)


def _f32(x):
    return ops.cast(x, ms.float32)


def _log_softmax(z):
    shifted = z - ops.stop_gradient(z.max(-1, keepdims=True))
    return shifted - ops.log(ops.exp(shifted).sum(-1, keepdims=True))


def _mse(a, b):
    d = a - b
    return ops.mean(d * d)


def loss_term(kind: str, pairs, temperature: float, student_cell, s_taps, t_hidden, t_scores, t_logits,
              labels, half=False, fused_mse=None, attention_threshold=None, no_threshold=None, mask=None):
    """The unweighted value of one term (a LossTerm's kind, pairs, temperature) as a float32 scalar.

    `fused_mse` is the fused kernel `FusedKernels.mse` (mean of squared differences after zeroing
    values at or below a [1] threshold tensor, one pass each way) or None for MindSpore's own ops;
    `attention_threshold` and `no_threshold` are its thresholds for the attention and the
    hidden-state losses. `mask` (float32 [B, L], a graph with mask_padding) restricts the position
    losses to real tokens: both sides are multiplied by the mask (a masked value becomes 0 on both,
    and so adds nothing, nor any gradient), and the mean over all elements is rescaled to one over
    the real ones (graph.losses.MASKED_KINDS).
    """
    s_hidden, s_scores, _, s_logits = s_taps
    if kind == "attention_mse":
        total = 0.0
        pair = None if mask is None else ops.expand_dims(ops.expand_dims(mask, 1), 3) * ops.expand_dims(
            ops.expand_dims(mask, 1), 2)  # [B, 1, L, L]
        for s, t in pairs:
            a_s, a_t = s_scores[s], t_scores[t]
            if pair is not None:
                a_s, a_t = a_s * pair, a_t * pair  # a masked score becomes 0, which c() keeps at 0
            if fused_mse is not None:
                value = fused_mse(a_s, a_t, attention_threshold).reshape(())
            else:
                value = _mse(_zero_masked(a_s), _zero_masked(a_t))
            if pair is not None:
                value = value * (pair.size / pair.sum())
            total = total + value
        return total
    if kind in ("embedding_mse", "hidden_mse"):
        total = 0.0
        weights = None if mask is None else ops.expand_dims(mask, 2)  # [B, L, 1]
        for s, t in pairs:
            projected, target = student_cell.project(s_hidden[s], s, half), t_hidden[t]
            if weights is not None:
                projected, target = projected * weights, target * weights
            if fused_mse is not None:
                value = fused_mse(projected, target, no_threshold).reshape(())
            else:
                value = _mse(projected, target)
            if weights is not None:
                value = value * (weights.size / weights.sum())
            total = total + value
        return total
    # The logit losses run in float64 on [B, C] tensors (negligible cost), with softmax written out:
    # MindSpore's Softmax/LogSoftmax kernels (float64 too) err by ~1e-6 forward and ~1e-5 relative
    # in their gradients, while float64 exp/log are exact to rounding.
    if kind == "soft_cross_entropy":
        target = ops.exp(_log_softmax(_f64(t_logits) / temperature))
        return _f32(ops.mean(-target * _log_softmax(_f64(s_logits) / temperature)))
    if kind == "hard_cross_entropy":
        logp = _log_softmax(_f64(s_logits))
        onehot = ops.one_hot(ops.cast(labels, ms.int32), s_logits.shape[-1],
                             ops.ones((), ms.float32), ops.zeros((), ms.float32))
        return _f32(-ops.mean((_f64(onehot) * logp).sum(-1)))
    if kind == "mse":
        return _mse(s_logits[:, 0], ops.cast(labels, ms.float32))
    raise ValueError(f"unknown loss kind {kind}")
