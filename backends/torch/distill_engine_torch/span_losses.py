"""The span task's loss kinds in PyTorch; formulas and numpy references in
distill_engine.tasks.span.losses. Called as `impl(student, teacher, mask, labels, params)` with the
span head's logits [B, L, 2], the mask [B, L] (or None) and the labels [B, 2] (the answer's start and
end positions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill_engine.tasks.span.losses import MASKED


def _log_probs(z, mask, temp=1.0):
    z = z / temp
    if mask is not None:
        z = torch.where(mask[..., None] > 0, z, torch.full_like(z, MASKED))
    return F.log_softmax(z, dim=1)


def span_cross_entropy(student, teacher, mask, labels, params):
    logp = _log_probs(student[0], mask)
    return -torch.gather(logp, 1, labels.long()[:, None, :]).mean()


def span_soft_cross_entropy(student, teacher, mask, labels, params):
    (temp,) = params
    log_s, log_t = _log_probs(student[0], mask, temp), _log_probs(teacher[0], mask, temp)
    return torch.mean(torch.sum(-torch.exp(log_t) * log_s, dim=1))


def span_kl_divergence(student, teacher, mask, labels, params):
    (temp,) = params
    log_s, log_t = _log_probs(student[0], mask, temp), _log_probs(teacher[0], mask, temp)
    return (temp * temp) * torch.mean(torch.sum(torch.exp(log_t) * (log_t - log_s), dim=1))
