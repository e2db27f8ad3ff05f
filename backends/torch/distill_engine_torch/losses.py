"""The loss kinds in PyTorch: one function per built-in kind, formulas in distill_engine.losses.builtin.

Each is called as `impl(student, teacher, mask, labels, params)` (distill_engine.losses.definition):
tuples of float32 tensors, one per mapped pair, the student's already projected where the kind
says so. Registered by `distill_engine_torch.plugin` through `register_loss_implementations`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill_engine.losses.builtin import ATTENTION_ZERO_BELOW, COSINE_EPS, MASK_VALUE, NORMALIZE_EPS


def _position_mean(values: torch.Tensor, mask) -> torch.Tensor:
    """Mean of [B, L] per-position values: every position, or the real ones."""
    return values.mean() if mask is None else torch.sum(values * mask) / torch.sum(mask)


def _row_mean(values: torch.Tensor, mask) -> torch.Tensor:
    """Mean of [B, h, L] per-query-row values: every row, or the real query positions'."""
    if mask is None:
        return values.mean()
    return torch.sum(values * mask[:, None, :]) / (values.shape[1] * torch.sum(mask))


def _mask_keys(scores: torch.Tensor, mask) -> torch.Tensor:
    return scores if mask is None else scores + (1.0 - mask)[:, None, None, :] * MASK_VALUE


def attention_mse(student, teacher, mask, labels, params):
    (after_softmax,) = params
    pair = None if mask is None else mask[:, None, :, None] * mask[:, None, None, :]  # [B, 1, L, L]
    total = 0.0
    for a_s, a_t in zip(student, teacher):
        if after_softmax:
            a_s, a_t = torch.softmax(_mask_keys(a_s, mask), -1), torch.softmax(_mask_keys(a_t, mask), -1)
        else:
            a_s = torch.where(a_s <= ATTENTION_ZERO_BELOW, torch.zeros_like(a_s), a_s)
            a_t = torch.where(a_t <= ATTENTION_ZERO_BELOW, torch.zeros_like(a_t), a_t)
        if pair is None:
            total = total + F.mse_loss(a_s, a_t)
        else:
            total = total + torch.sum((a_s - a_t) ** 2 * pair) / (a_s.shape[1] * torch.sum(pair))
    return total


def hidden_mse(student, teacher, mask, labels, params):
    total = 0.0
    for h_s, h_t in zip(student, teacher):
        if mask is None:
            total = total + F.mse_loss(h_s, h_t)
        else:
            total = total + torch.sum((h_s - h_t) ** 2 * mask[:, :, None]) / (h_s.shape[2] * torch.sum(mask))
    return total


def soft_cross_entropy(student, teacher, mask, labels, params):
    (temp,) = params
    return torch.mean(-F.softmax(teacher[0] / temp, dim=-1) * F.log_softmax(student[0] / temp, dim=-1))


def hard_cross_entropy(student, teacher, mask, labels, params):
    return F.cross_entropy(student[0], labels.long())


def label_mse(student, teacher, mask, labels, params):
    return F.mse_loss(student[0][:, 0], labels.float())


def kl_divergence(student, teacher, mask, labels, params):
    (temp,) = params
    return F.kl_div(F.log_softmax(student[0] / temp, -1), F.log_softmax(teacher[0] / temp, -1),
                    reduction="batchmean", log_target=True) * (temp * temp)


def logit_mse(student, teacher, mask, labels, params):
    return F.mse_loss(student[0], teacher[0])


def cosine_hidden(student, teacher, mask, labels, params):
    total = 0.0
    for h_s, h_t in zip(student, teacher):
        norms = torch.linalg.vector_norm(h_s, dim=-1) * torch.linalg.vector_norm(h_t, dim=-1)
        cos = torch.sum(h_s * h_t, -1) / torch.clamp(norms, min=COSINE_EPS)
        total = total + _position_mean(1.0 - cos, mask)
    return total


def pkd_hidden(student, teacher, mask, labels, params):
    diffs = [F.mse_loss(F.normalize(h_s[:, 0], dim=-1, eps=NORMALIZE_EPS), F.normalize(h_t[:, 0], dim=-1, eps=NORMALIZE_EPS))
             for h_s, h_t in zip(student, teacher)]
    return sum(diffs) / len(diffs)


def _kl_rows(log_t, log_s, mask):
    return _row_mean(torch.sum(torch.exp(log_t) * (log_t - log_s), -1), mask)


def minilm_attention(student, teacher, mask, labels, params):
    return sum(_kl_rows(F.log_softmax(_mask_keys(a_t, mask), -1), F.log_softmax(_mask_keys(a_s, mask), -1), mask)
               for a_s, a_t in zip(student, teacher))


def _value_relation(v, mask):
    return F.log_softmax(_mask_keys(torch.matmul(v, v.transpose(-1, -2)) / v.shape[-1] ** 0.5, mask), -1)


def minilm_value_relation(student, teacher, mask, labels, params):
    return sum(_kl_rows(_value_relation(v_t, mask), _value_relation(v_s, mask), mask)
               for v_s, v_t in zip(student, teacher))

