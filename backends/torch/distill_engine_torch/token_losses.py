"""The token task's loss kinds in PyTorch; formulas and numpy references in
distill_engine.tasks.token.losses. Called as `impl(student, teacher, mask, labels, params)` with the
token head's logits [B, L, C] and the per-position labels [B, L] (-100: a position left out)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill_engine.tasks.token.encoding import IGNORE_LABEL


def _over_words(per_position: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """sum over the positions whose label is not -100 / their count (0 when there are none)."""
    m = (labels != IGNORE_LABEL).to(per_position.dtype)
    return torch.sum(per_position * m) / torch.clamp(torch.sum(m), min=1.0)


def token_cross_entropy(student, teacher, mask, labels, params):
    labels = labels.long()
    logp = F.log_softmax(student[0], dim=-1)
    safe = torch.where(labels == IGNORE_LABEL, torch.zeros_like(labels), labels)
    return _over_words(-torch.gather(logp, -1, safe[..., None])[..., 0], labels)


def token_soft_cross_entropy(student, teacher, mask, labels, params):
    (temp,) = params
    per = torch.mean(-F.softmax(teacher[0] / temp, dim=-1) * F.log_softmax(student[0] / temp, dim=-1), dim=-1)
    return _over_words(per, labels)


def token_kl_divergence(student, teacher, mask, labels, params):
    (temp,) = params
    log_t, log_s = F.log_softmax(teacher[0] / temp, dim=-1), F.log_softmax(student[0] / temp, dim=-1)
    return (temp * temp) * _over_words(torch.sum(torch.exp(log_t) * (log_t - log_s), dim=-1), labels)
