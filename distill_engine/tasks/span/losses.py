"""The span loss kinds: fine-tuning a reader and its prediction-layer distillation.

They read the span head's logits z [B, L, 2] (`graph.taps.HEAD_LOGITS`: z[..., 0] the start logits,
z[..., 1] the end logits) and the labels [B, 2] the span task type encodes (the positions of the
answer's first and last pieces, 0 ([CLS]) for a window without the answer). Each distribution is a
softmax over a row's positions: with the phase's `mask_padding` (m = the attention mask) over its
real positions only, padded ones left out of the softmax; without it over every position, padding
included, as Hugging Face's BertForQuestionAnswering computes its loss. The start and end terms are
averaged, then the rows: run_qa's `(start_loss + end_loss) / 2`.

The distributions are over positions, whose number changes with the batch's padded length: the
soft cross-entropy sums over positions (a cross-entropy between two distributions), where the token
and sequence kinds average over classes (TinyBERT's `.mean()` over a fixed class count).
`positions = True`: the teacher-output cache, which stores real positions only, serves them with
`mask_padding = true`.

Each backend implements them in a module of its own (`span_losses.py`), its functions named like
the numpy references here; `span_implementations(module)` is what its plugin registers.
"""

from __future__ import annotations

import numpy as np

from distill_engine.losses.builtin import TEMPERATURE, log_softmax
from distill_engine.losses.definition import LossDefinition, implementations

# A padded position's logit inside the softmax with mask_padding: exp() of it is exactly 0 in float32
# and float64, and it stays finite, so that 0 * log p is 0 and not nan.
MASKED = -1e9

_OVER = ("p(.) a softmax over the row's positions (its real ones with mask_padding, every one without), "
         "z[..., 0] the start and z[..., 1] the end logits, y the labels [B, 2]")


def _log_probs(z, mask, temp: float = 1.0) -> np.ndarray:
    """log softmax over positions of z [B, L, 2] / temp, padded positions out when `mask` is given."""
    z = np.asarray(z, np.float64) / temp
    if mask is not None:
        z = np.where(np.asarray(mask)[..., None] > 0, z, MASKED)
    return log_softmax(z, axis=1)


def span_cross_entropy(student, teacher, mask, labels, params) -> float:
    logp = _log_probs(student[0], mask)
    y = np.asarray(labels).astype(np.int64)
    picked = np.take_along_axis(logp, y[:, None, :], axis=1)[:, 0, :]  # [B, 2]: start's and end's
    return float(-picked.mean())


def span_soft_cross_entropy(student, teacher, mask, labels, params) -> float:
    (temp,) = params
    log_s, log_t = _log_probs(student[0], mask, temp), _log_probs(teacher[0], mask, temp)
    return float((-(np.exp(log_t) * log_s).sum(axis=1)).mean())


def span_kl_divergence(student, teacher, mask, labels, params) -> float:
    (temp,) = params
    log_s, log_t = _log_probs(student[0], mask, temp), _log_probs(teacher[0], mask, temp)
    return float(temp * temp * (np.exp(log_t) * (log_t - log_s)).sum(axis=1).mean())


SPAN_LOSSES = (
    LossDefinition(
        "span_cross_entropy", "logits", summary="a reader's cross-entropy against the gold answer's start and end",
        formula="mean_b ( -log p(z_S[b, :, 0])[y[b, 0]] - log p(z_S[b, :, 1])[y[b, 1]] ) / 2, " + _OVER
                + " (Hugging Face's BertForQuestionAnswering loss).",
        reference=span_cross_entropy, needs_teacher=False, needs_labels=True, positions=True, heads=("span",)),
    LossDefinition(
        "span_soft_cross_entropy", "logits", summary="TinyBERT's prediction loss on the start and end positions",
        formula="mean_b sum_{k=0,1} sum_i -p(z_T[b, :, k] / T)[i] * log p(z_S[b, :, k] / T)[i] / 2, " + _OVER
                + ": soft cross-entropy over positions (summed over positions, no T^2).",
        reference=span_soft_cross_entropy, positions=True, params=(TEMPERATURE,), heads=("span",)),
    LossDefinition(
        "span_kl_divergence", "logits", summary="soft targets (KL with temperature) on the start and end positions",
        formula="T^2 * mean_b sum_{k=0,1} KL( p(z_T[b, :, k] / T) || p(z_S[b, :, k] / T) ) / 2, " + _OVER + ".",
        reference=span_kl_divergence, positions=True, params=(TEMPERATURE,), heads=("span",)),
)


def span_implementations(module: str) -> dict[str, str]:
    """{kind: "module:function"} of the span kinds (`losses.definition.implementations`)."""
    return implementations(SPAN_LOSSES, module)
