"""The per-token loss kinds: fine-tuning a tagger and its prediction-layer distillation.

They read the token head's logits z [B, L, C] (`graph.taps.HEAD_LOGITS`) and the per-position
labels [B, L] the token task type encodes: a tag id on each word's first piece and `IGNORE_LABEL`
(-100) everywhere else. The positions that count are M = {(b, i): labels[b, i] != -100}: the words'
first pieces (every piece of a word with `label_all_tokens`), never [CLS], [SEP] or padding. The
distillation kinds read the labels for M alone, never their values; so they need labelled rows
(`needs_labels`), and they do not depend on padding (`positions = False`: the teacher-output cache
serves them whatever the phase's mask_padding, its zeros at padded positions being outside M). A
batch without any position in M gives 0 (no word to learn from, and no 0/0).

Each backend implements them in a module of its own (`token_losses.py`), its functions named like
the numpy references here; `token_implementations(module)` is what its plugin registers.
"""

from __future__ import annotations

import numpy as np

from distill_engine.losses.builtin import TEMPERATURE, log_softmax, softmax
from distill_engine.losses.definition import LossDefinition, implementations
from distill_engine.tasks.token.encoding import IGNORE_LABEL

_OVER_M = ("over the positions M whose label is not -100 (each word's first piece; every piece with "
           "label_all_tokens), |M| their count; 0 when M is empty")


def _positions(labels) -> tuple[np.ndarray, int]:
    m = (np.asarray(labels) != IGNORE_LABEL).astype(np.float64)
    return m, int(m.sum())


def token_cross_entropy(student, teacher, mask, labels, params) -> float:
    m, count = _positions(labels)
    y = np.where(m > 0, np.asarray(labels), 0).astype(np.int64)
    logp = log_softmax(np.asarray(student[0], np.float64))
    picked = np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
    return float(-(picked * m).sum() / max(count, 1))


def token_soft_cross_entropy(student, teacher, mask, labels, params) -> float:
    (temp,) = params
    m, count = _positions(labels)
    z_s, z_t = np.asarray(student[0], np.float64), np.asarray(teacher[0], np.float64)
    per = (-softmax(z_t / temp) * log_softmax(z_s / temp)).mean(-1)
    return float((per * m).sum() / max(count, 1))


def token_kl_divergence(student, teacher, mask, labels, params) -> float:
    (temp,) = params
    m, count = _positions(labels)
    log_t = log_softmax(np.asarray(teacher[0], np.float64) / temp)
    log_s = log_softmax(np.asarray(student[0], np.float64) / temp)
    per = (np.exp(log_t) * (log_t - log_s)).sum(-1)
    return float(temp * temp * (per * m).sum() / max(count, 1))


TOKEN_LOSSES = (
    LossDefinition(
        "token_cross_entropy", "logits", summary="a tagger's cross-entropy against the gold tags, per word",
        formula="sum_{(b,i) in M} -log p(z_S[b, i])[y[b, i]] / |M|, " + _OVER_M
                + " (Hugging Face's token classification loss, ignore_index -100).",
        reference=token_cross_entropy, needs_teacher=False, needs_labels=True, positions=False, heads=("token",)),
    LossDefinition(
        "token_soft_cross_entropy", "logits", summary="TinyBERT's prediction loss, per word",
        formula="sum_{(b,i) in M} mean_C ( -p(z_T[b, i] / T) * log p(z_S[b, i] / T) ) / |M|, " + _OVER_M
                + ": soft_cross_entropy per word (mean over classes, no T^2).",
        reference=token_soft_cross_entropy, needs_labels=True, positions=False, params=(TEMPERATURE,),
        heads=("token",)),
    LossDefinition(
        "token_kl_divergence", "logits", summary="soft targets (KL with temperature), per word",
        formula="T^2 * sum_{(b,i) in M} sum_C p(z_T[b, i] / T) (log p(z_T[b, i] / T) - log p(z_S[b, i] / T)) / |M|, "
                + _OVER_M + ": kl_divergence per word.",
        reference=token_kl_divergence, needs_labels=True, positions=False, params=(TEMPERATURE,), heads=("token",)),
)


def token_implementations(module: str) -> dict[str, str]:
    """{kind: "module:function"} of the token kinds (`losses.definition.implementations`)."""
    return implementations(TOKEN_LOSSES, module)
