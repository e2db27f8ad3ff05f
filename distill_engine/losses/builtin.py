"""The built-in loss kinds: TinyBERT's six and the objectives the field compares it with.

Each is a `LossDefinition` with its exact formula and its numpy reference (float64), registered
through the same `register_losses` hook as a third party's. Notation: B batch, L sequence
length, h heads, H width (the teacher's after the student's projection), C classes, z logits,
T temperature, y gold labels, P the mapped (student, teacher) pairs, m the attention mask (only
with a phase's mask_padding = true; without it every position counts, padding included),
p = softmax, log p = log_softmax, n(x) = x / max(|x|_2, 1e-12).
"""

from __future__ import annotations

import numpy as np

from distill_engine.hookspecs import hookimpl
from distill_engine.losses.definition import LossDefinition, LossParam

# TinyBERT zeroes attention scores at or below this before its attention MSE (masked keys carry
# -10000 there, so they compare as 0 on both sides).
ATTENTION_ZERO_BELOW = -100.0
MASK_VALUE = -10000.0  # added to masked key positions before a softmax (BERT, TinyBERT)
COSINE_EPS = 1e-8  # cos(x, y) = x.y / max(|x| |y|, COSINE_EPS)
NORMALIZE_EPS = 1e-12  # n(x) = x / max(|x|, NORMALIZE_EPS) (torch.nn.functional.normalize)

TEMPERATURE = LossParam("temperature", 1.0, "the softmax temperature T of both sides", 1e-3, 1e3)
MASKED_MEAN = ("; with mask_padding the mean runs over real positions only")


def _f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _position_mean(values: np.ndarray, mask) -> float:
    """Mean of [B, L] per-position values: over every position, or over the real ones."""
    if mask is None:
        return float(values.mean())
    m = _f64(mask)
    return float((values * m).sum() / m.sum())


def _row_mean(values: np.ndarray, mask) -> float:
    """Mean of [B, h, L] per-query-row values (every row, or the real query positions')."""
    if mask is None:
        return float(values.mean())
    m = _f64(mask)[:, None, :]
    return float((values * m).sum() / (values.shape[1] * m.sum()))


def _mask_keys(scores: np.ndarray, mask) -> np.ndarray:
    """Scores [B, h, L, L] with -10000 added at padded keys when a mask is given. A model's scores
    carry it already (adding it twice changes no probability); cached teacher scores hold 0 at
    padded positions and need it."""
    return scores if mask is None else scores + (1.0 - _f64(mask))[:, None, None, :] * MASK_VALUE


# --- TinyBERT ---------------------------------------------------------------------------------
def attention_mse(student, teacher, mask, labels, params) -> float:
    (after_softmax,) = params
    total = 0.0
    for a_s, a_t in zip(student, teacher):
        a_s, a_t = _f64(a_s), _f64(a_t)
        if after_softmax:
            a_s, a_t = softmax(_mask_keys(a_s, mask)), softmax(_mask_keys(a_t, mask))
        else:
            a_s = np.where(a_s <= ATTENTION_ZERO_BELOW, 0.0, a_s)
            a_t = np.where(a_t <= ATTENTION_ZERO_BELOW, 0.0, a_t)
        sq = (a_s - a_t) ** 2
        if mask is None:
            total += float(sq.mean())
        else:
            m = _f64(mask)
            pair = m[:, None, :, None] * m[:, None, None, :]  # [B, 1, L, L]: both positions real
            total += float((sq * pair).sum() / (sq.shape[1] * pair.sum()))
    return total


def hidden_mse(student, teacher, mask, labels, params) -> float:
    total = 0.0
    for h_s, h_t in zip(student, teacher):
        total += _position_mean(((_f64(h_s) - _f64(h_t)) ** 2).mean(-1), mask)
    return total


def soft_cross_entropy(student, teacher, mask, labels, params) -> float:
    (temp,) = params
    return float(np.mean(-softmax(_f64(teacher[0]) / temp) * log_softmax(_f64(student[0]) / temp)))


def hard_cross_entropy(student, teacher, mask, labels, params) -> float:
    y = np.asarray(labels).astype(np.int64)
    return float(-np.mean(log_softmax(_f64(student[0]))[np.arange(len(y)), y]))


def label_mse(student, teacher, mask, labels, params) -> float:
    return float(np.mean((_f64(student[0])[:, 0] - _f64(labels)) ** 2))


# --- the field's other objectives --------------------------------------------------------------
def kl_divergence(student, teacher, mask, labels, params) -> float:
    (temp,) = params
    log_t, log_s = log_softmax(_f64(teacher[0]) / temp), log_softmax(_f64(student[0]) / temp)
    return float(temp * temp * np.mean(np.sum(np.exp(log_t) * (log_t - log_s), axis=-1)))


def logit_mse(student, teacher, mask, labels, params) -> float:
    return float(np.mean((_f64(student[0]) - _f64(teacher[0])) ** 2))


def cosine_hidden(student, teacher, mask, labels, params) -> float:
    total = 0.0
    for h_s, h_t in zip(student, teacher):
        h_s, h_t = _f64(h_s), _f64(h_t)
        norms = np.sqrt((h_s * h_s).sum(-1)) * np.sqrt((h_t * h_t).sum(-1))
        cos = (h_s * h_t).sum(-1) / np.maximum(norms, COSINE_EPS)
        total += _position_mean(1.0 - cos, mask)
    return total


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.sqrt((x * x).sum(-1, keepdims=True)), NORMALIZE_EPS)


def pkd_hidden(student, teacher, mask, labels, params) -> float:
    diffs = [(_normalize(_f64(h_s)[:, 0]) - _normalize(_f64(h_t)[:, 0])) ** 2 for h_s, h_t in zip(student, teacher)]
    return float(np.mean([d.mean() for d in diffs]))


def _kl_rows(log_t: np.ndarray, log_s: np.ndarray, mask) -> float:
    """mean over rows (b, a, i) of sum_j p_T (log p_T - log p_S)."""
    return _row_mean(np.sum(np.exp(log_t) * (log_t - log_s), axis=-1), mask)


def minilm_attention(student, teacher, mask, labels, params) -> float:
    return sum(_kl_rows(log_softmax(_mask_keys(_f64(a_t), mask)), log_softmax(_mask_keys(_f64(a_s), mask)), mask)
               for a_s, a_t in zip(student, teacher))


def _value_relation(v: np.ndarray, mask) -> np.ndarray:
    """log softmax(V V^T / sqrt(d_head) (+ -10000 on padded keys with a mask)), [B, h, L, L]."""
    v = _f64(v)
    scores = v @ v.transpose(0, 1, 3, 2) / np.sqrt(v.shape[-1])
    return log_softmax(_mask_keys(scores, mask))


def minilm_value_relation(student, teacher, mask, labels, params) -> float:
    return sum(_kl_rows(_value_relation(v_t, mask), _value_relation(v_s, mask), mask) for v_s, v_t in zip(student, teacher))


BUILTIN_LOSSES = (
    LossDefinition(
        "attention_mse", "attention", summary="TinyBERT's attention loss",
        formula="sum over mapped layers (s, t) of mean_{B,h,L,L} (c(A_S[s]) - c(A_T[t]))^2, where A is the raw "
                "score QK^T/sqrt(d_head) + (1 - m) * -10000 before softmax and c(x) = where(x <= -100, 0, x) "
                "(masked keys become 0). after_softmax = true compares p(A_S) and p(A_T) instead (no c; with mask_padding "
                "-10000 is added at padded keys before p). "
                "With mask_padding: sum_{b,a,i,j} m[b,i] m[b,j] (...)^2 / (h sum_b l_b^2), l_b = sum_i m[b,i].",
        reference=attention_mse, same_heads=True,
        params=(LossParam("after_softmax", False, "compare attention probabilities instead of raw scores"),)),
    LossDefinition(
        "embedding_mse", "embeddings", summary="TinyBERT's embedding loss",
        formula="mean_{B,L,H} (E_S W_0^T + b_0 - E_T)^2 on hidden-state entry 0 (the embedding output), W_0 the "
                "student's projection for entry 0 (identity when the widths are equal and the student has none)"
                + MASKED_MEAN + " (sum_{b,i} m[b,i] sum_H (...)^2 / (H sum_b l_b)).",
        reference=hidden_mse, projected=True),
    LossDefinition(
        "hidden_mse", "hidden", summary="TinyBERT's hidden-state loss",
        formula="sum over mapped entries (j, t), j >= 1, of mean_{B,L,H} (H_S[j] W_j^T + b_j - H_T[t])^2, "
                "H[j] the output of layer j, W_j the student's projection for entry j" + MASKED_MEAN + ".",
        reference=hidden_mse, projected=True),
    LossDefinition(
        "soft_cross_entropy", "logits", summary="TinyBERT's prediction loss",
        formula="mean_{B,C} ( -p(z_T / T) * log p(z_S / T) ): mean over classes too, no T^2 factor.",
        reference=soft_cross_entropy, params=(TEMPERATURE,)),
    LossDefinition(
        "hard_cross_entropy", "logits", summary="cross-entropy against gold labels",
        formula="mean_B ( -log p(z_S)[y] ).", reference=hard_cross_entropy, needs_teacher=False, needs_labels=True),
    LossDefinition(
        "mse", "logits", summary="regression against gold scores (STS-B)",
        formula="mean_B (z_S[:, 0] - y)^2.", reference=label_mse, needs_teacher=False, needs_labels=True),
    LossDefinition(
        "kl_divergence", "logits", summary="soft targets (Hinton et al.; DistilBERT's L_ce)",
        formula="T^2 * mean_B sum_C p(z_T / T) * (log p(z_T / T) - log p(z_S / T)): KL(teacher || student) "
                "per example, averaged over the batch ('batchmean'), scaled by T^2 so the gradients keep "
                "their size as T grows.",
        reference=kl_divergence, params=(TEMPERATURE,)),
    LossDefinition(
        "logit_mse", "logits", summary="MSE between the logits",
        formula="mean_{B,C} (z_S - z_T)^2.", reference=logit_mse),
    LossDefinition(
        "cosine_hidden", "hidden", summary="DistilBERT's cosine embedding loss on hidden states",
        formula="sum over mapped entries (j, t) of mean_{B,L} (1 - cos(H_S[j] W_j^T + b_j, H_T[t])), "
                "cos(x, y) = x.y / max(|x| |y|, 1e-8), per position" + MASKED_MEAN
                + " (DistilBERT counts real tokens only: set mask_padding = true; its mapping is \"last\").",
        reference=cosine_hidden, projected=True),
    LossDefinition(
        "pkd_hidden", "hidden", summary="Patient KD: MSE of L2-normalised [CLS] states",
        formula="mean over mapped entries (j, t) of mean_{B,H} (n(P_j(H_S[j][:, 0])) - n(H_T[t][:, 0]))^2, "
                "P_j the student's projection, n(x) = x / max(|x|, 1e-12): the [CLS] position only, so padding "
                "never enters.",
        reference=pkd_hidden, projected=True, positions=False),
    LossDefinition(
        "minilm_attention", "attention", summary="MiniLM: KL between the last layers' attention distributions",
        formula="sum over mapped layers (s, t) (default mapping \"last\": the last layers) of "
                "mean_{B,h,i} sum_j p(A_T[t])_{ij} (log p(A_T[t])_{ij} - log p(A_S[s])_{ij}), A the raw scores "
                "(masked keys carry -10000, so their probability is 0); with mask_padding -10000 is added at padded "
                "keys once more (cached teacher scores hold 0 there) and the mean runs over real query positions i only. Heads must be as many; their widths may differ.",
        reference=minilm_attention, same_heads=True, mapping="last"),
    LossDefinition(
        "minilm_value_relation", "values", summary="MiniLM: KL between the last layers' value relations",
        formula="sum over mapped layers (s, t) (default \"last\") of mean_{B,h,i} sum_j VR_T log(VR_T / VR_S), "
                "VR = p(V V^T / sqrt(d_head)) per head from the layer's value vectors V [B, h, L, d_head] (each "
                "model's own d_head); with mask_padding padded keys get -10000 before the softmax and the mean "
                "runs over real query positions (MiniLM's setting: without it padding counts as keys too).",
        reference=minilm_value_relation, same_heads=True, mapping="last"),
)


def builtin_implementations(module: str) -> dict[str, str]:
    """{kind: "module:function"} of every built-in kind, for a backend whose `module` names each
    implementation like the kind's numpy reference here (embedding_mse and hidden_mse share
    `hidden_mse`, mse is `label_mse`): what its plugin registers through
    `register_loss_implementations`, without importing the framework."""
    return {d.name: f"{module}:{d.reference.__name__}" for d in BUILTIN_LOSSES}


@hookimpl
def register_losses(register):
    for definition in BUILTIN_LOSSES:
        register(definition)
