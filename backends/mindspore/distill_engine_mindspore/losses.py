"""The loss kinds in MindSpore ops: one function per built-in kind, formulas in distill_engine.losses.builtin.

Each is called as `impl(student, teacher, mask, labels, params)` (distill_engine.losses.definition):
tuples of float32 tensors, one per mapped pair, the student's already projected where the kind
says so; `mask` float32 [B, L] or None; `params` a tuple of Python constants. Registered by
`distill_engine_mindspore.plugin` through `register_loss_implementations`, and traced into the
compiled step (trainer.Objective), so every branch on `params` or on `mask is None` is resolved
at compile time.

The fused CPU kernel `FusedKernels.mse` (mean of squared differences after zeroing values at or
below a threshold, one pass each way) serves `attention_mse` and `hidden_mse` / `embedding_mse`
when the student runs with the fused kernels: the Objective recognises these functions (`FUSABLE`)
and passes a sixth argument `fused = (mse kernel, attention threshold [1], no threshold [1])`; called
with the plain five arguments (as any third-party implementation is) they use MindSpore's own ops.

The logit losses run in `runtime.WIDE` on [B, C] tensors, with softmax written out: float64 on a
CPU (negligible cost), where MindSpore's Softmax/LogSoftmax kernels (float64 too) err by ~1e-6
forward and ~1e-5 relative in their gradients while float64 exp/log are exact to rounding; float32
on GPU and Ascend (no float64 kernels on Ascend's AI Core). The position losses run in float32.
"""

from __future__ import annotations

import mindspore as ms
from mindspore import ops

from distill_engine.losses.builtin import ATTENTION_ZERO_BELOW, COSINE_EPS, MASK_VALUE, NORMALIZE_EPS
from distill_engine_mindspore import runtime


# --- helpers ------------------------------------------------------------------------------------
def _wide(x):
    return ops.cast(x, runtime.WIDE)  # float64 on a CPU, float32 elsewhere (read when a graph compiles)


def _f32(x):
    return ops.cast(x, ms.float32)


def _log_softmax(z):
    """log softmax over the last axis, written out (exp and log, the max only shifts)."""
    shifted = z - ops.stop_gradient(z.max(-1, keepdims=True))
    return shifted - ops.log(ops.exp(shifted).sum(-1, keepdims=True))


def _mse(a, b):
    d = a - b
    return ops.mean(d * d)


def _zero_masked(scores):
    return ops.select(scores <= ATTENTION_ZERO_BELOW, ops.zeros_like(scores), scores)


def _mask_keys(scores, mask):
    """Scores [B, h, L, L] with -10000 added at padded keys when a mask is given."""
    if mask is None:
        return scores
    return scores + ops.expand_dims(ops.expand_dims(1.0 - mask, 1), 1) * MASK_VALUE


def _pair_mask(mask):
    """[B, 1, L, L]: 1 where both the query and the key position are real."""
    return ops.expand_dims(ops.expand_dims(mask, 1), 3) * ops.expand_dims(ops.expand_dims(mask, 1), 2)


def _masked_mse(a, b, weights, fused=None, zero_below=False):
    """mean((c(a) - c(b))^2) over the positions where `weights` (broadcast to a's shape, 0 or 1) is 1;
    c zeroes values <= ATTENTION_ZERO_BELOW with `zero_below`, else is the identity. Both sides are
    multiplied by the weights (a weighted-out value becomes 0 on both, which c keeps at 0, so it adds
    nothing, nor any gradient) and the mean over every element is rescaled to one over the weighted
    ones. `fused`: (FusedKernels.mse, attention threshold, no threshold) or None for MindSpore's ops."""
    if weights is not None:
        a, b = a * weights, b * weights
    if fused is not None:
        kernel, attention_threshold, no_threshold = fused
        value = kernel(a, b, attention_threshold if zero_below else no_threshold).reshape(())
    elif zero_below:
        value = _mse(_zero_masked(a), _zero_masked(b))
    else:
        value = _mse(a, b)
    if weights is not None:
        value = value * (weights.size / weights.sum())
    return value


def _position_mean(values, mask):
    """Mean of [B, L] per-position values: every position, or the real ones."""
    return values.mean() if mask is None else (values * mask).sum() / mask.sum()


def _row_mean(values, mask):
    """Mean of [B, h, L] per-query-row values: every row, or the real query positions'."""
    if mask is None:
        return values.mean()
    return (values * ops.expand_dims(mask, 1)).sum() / (values.shape[1] * mask.sum())


def _kl_rows(log_t, log_s, mask):
    """mean over rows (b, a, i) of sum_j p_T (log p_T - log p_S)."""
    return _row_mean((ops.exp(log_t) * (log_t - log_s)).sum(-1), mask)


# --- TinyBERT -----------------------------------------------------------------------------------
def attention_mse(student, teacher, mask, labels, params, fused=None):
    (after_softmax,) = params
    pair = None if mask is None else _pair_mask(mask)  # [B, 1, L, L]
    total = 0.0
    for a_s, a_t in zip(student, teacher):
        if after_softmax:
            a_s, a_t = ops.exp(_log_softmax(_mask_keys(a_s, mask))), ops.exp(_log_softmax(_mask_keys(a_t, mask)))
        total = total + _masked_mse(a_s, a_t, pair, fused, not after_softmax)
    return total


def hidden_mse(student, teacher, mask, labels, params, fused=None):
    weights = None if mask is None else ops.expand_dims(mask, 2)  # [B, L, 1]
    total = 0.0
    for h_s, h_t in zip(student, teacher):
        total = total + _masked_mse(h_s, h_t, weights, fused)
    return total


def soft_cross_entropy(student, teacher, mask, labels, params):
    (temp,) = params
    target = ops.exp(_log_softmax(_wide(teacher[0]) / temp))
    return _f32(ops.mean(-target * _log_softmax(_wide(student[0]) / temp)))


def hard_cross_entropy(student, teacher, mask, labels, params):
    logits = student[0]
    logp = _log_softmax(_wide(logits))
    onehot = ops.one_hot(ops.cast(labels, ms.int32), logits.shape[-1], ops.ones((), ms.float32),
                         ops.zeros((), ms.float32))
    return _f32(-ops.mean((_wide(onehot) * logp).sum(-1)))


def label_mse(student, teacher, mask, labels, params):
    return _mse(student[0][:, 0], _f32(labels))


# --- the field's other objectives -----------------------------------------------------------------
def kl_divergence(student, teacher, mask, labels, params):
    (temp,) = params
    log_t, log_s = _log_softmax(_wide(teacher[0]) / temp), _log_softmax(_wide(student[0]) / temp)
    return _f32(temp * temp * ops.mean((ops.exp(log_t) * (log_t - log_s)).sum(-1)))


def logit_mse(student, teacher, mask, labels, params):
    return _f32(_mse(_wide(student[0]), _wide(teacher[0])))


def cosine_hidden(student, teacher, mask, labels, params):
    total = 0.0
    for h_s, h_t in zip(student, teacher):
        norms = ops.sqrt((h_s * h_s).sum(-1)) * ops.sqrt((h_t * h_t).sum(-1))
        cos = (h_s * h_t).sum(-1) / ops.maximum(norms, COSINE_EPS)
        total = total + _position_mean(1.0 - cos, mask)
    return total


def _normalize(x):
    return x / ops.maximum(ops.sqrt((x * x).sum(-1, keepdims=True)), NORMALIZE_EPS)


def pkd_hidden(student, teacher, mask, labels, params):
    total = 0.0
    for h_s, h_t in zip(student, teacher):
        total = total + _mse(_normalize(h_s[:, 0]), _normalize(h_t[:, 0]))
    return total / len(student)


def minilm_attention(student, teacher, mask, labels, params):
    total = 0.0
    for a_s, a_t in zip(student, teacher):
        total = total + _kl_rows(_log_softmax(_mask_keys(a_t, mask)), _log_softmax(_mask_keys(a_s, mask)), mask)
    return total


def _value_relation(v, mask):
    """log softmax(V V^T / sqrt(d_head) (+ -10000 on padded keys with a mask)), [B, h, L, L]."""
    scores = ops.matmul(v, ops.transpose(v, (0, 1, 3, 2))) * (v.shape[-1] ** -0.5)
    return _log_softmax(_mask_keys(scores, mask))


def minilm_value_relation(student, teacher, mask, labels, params):
    total = 0.0
    for v_s, v_t in zip(student, teacher):
        total = total + _kl_rows(_value_relation(v_t, mask), _value_relation(v_s, mask), mask)
    return total


# The implementations that take the fused MSE kernel as a sixth argument (trainer.Objective).
FUSABLE = (attention_mse, hidden_mse)
