"""The distillation losses, each specified once: its name, what it compares, its exact formula.

Every backend implements each kind; the numpy reference (`distill_engine.reference`) is the
oracle the conformance suite checks them against. Notation: B batch, L sequence length, h heads,
H_S / H_T student / teacher width, z logits, T temperature, y gold labels.
"""

from __future__ import annotations

from typing import Literal

import attrs

LossKind = Literal["attention_mse", "embedding_mse", "hidden_mse", "soft_cross_entropy",
                   "hard_cross_entropy", "mse"]


@attrs.frozen
class LossKindInfo:
    name: str
    needs_teacher: bool
    needs_labels: bool
    formula: str


LOSS_KINDS: dict[str, LossKindInfo] = {
    info.name: info
    for info in (
        LossKindInfo(
            "attention_mse", True, False,
            "sum over mapped layers (s, t) of mean_{B,h,L,L} (c(A_S[s]) - c(A_T[t]))^2, where A is the raw "
            "score QK^T/sqrt(d_head) + (1 - mask) * -10000 before softmax and c(x) = where(x <= -100, 0, x) "
            "(masked positions become 0). Student and teacher need the same number of heads.",
        ),
        LossKindInfo(
            "embedding_mse", True, False,
            "mean_{B,L,H_T} (E_S W_0^T + b_0 - E_T)^2 on hidden-state entry 0 (the embedding output), "
            "W_0 the student's projection for entry 0 (the shared one when shared; identity when the "
            "widths are equal and the student has no projection).",
        ),
        LossKindInfo(
            "hidden_mse", True, False,
            "sum over mapped entries (j, t), j >= 1, of mean_{B,L,H_T} (H_S[j] W_j^T + b_j - H_T[t])^2, "
            "H[j] the output of layer j, W_j the student's projection (shared or per entry).",
        ),
        LossKindInfo(
            "soft_cross_entropy", True, False,
            "mean_{B,C} ( -softmax(z_T / T) * log_softmax(z_S / T) ): TinyBERT's prediction loss, mean "
            "over classes too, no T^2 factor.",
        ),
        LossKindInfo(
            "hard_cross_entropy", False, True,
            "mean_B ( -log_softmax(z_S)[y] ): ordinary cross-entropy against gold labels.",
        ),
        LossKindInfo(
            "mse", False, True,
            "mean_B (z_S[:, 0] - y)^2: regression (STS-B) against gold scores.",
        ),
    )
}


# The losses that compare token positions. With a phase's `mask_padding = true` they average over
# the real positions only, m[b, i] = attention_mask[b, i], l_b = sum_i m[b, i]:
#   embedding_mse, hidden_mse: sum_{b,i} m[b,i] sum_H (H_S W^T + b - H_T)^2 / (H_T sum_b l_b)
#   attention_mse: sum_{b,h,i,j} m[b,i] m[b,j] (c(A_S) - c(A_T))^2 / (h sum_b l_b^2)
# so a loss no longer depends on how far a batch is padded (fixed, longest or bucketed batches
# give each sequence the same terms), and padded positions need no teacher output: what the
# teacher-output cache, which stores real positions only, requires. Without it (the default, as
# the PyTorch original) every position of the batch counts, padding included.
MASKED_KINDS = ("attention_mse", "embedding_mse", "hidden_mse")
MASKED_FORMULA = (
    "with a phase's mask_padding = true, attention_mse, embedding_mse and hidden_mse average over real "
    "token positions only (m = attention mask, l_b = sum_i m[b, i]): the hidden losses "
    "sum_{b,i} m[b,i] sum_H (H_S W^T + b - H_T)^2 / (H_T sum_b l_b), attention_mse "
    "sum_{b,h,i,j} m[b,i] m[b,j] (c(A_S) - c(A_T))^2 / (h sum_b l_b^2).")


@attrs.frozen
class LossTerm:
    """One weighted term of a phase's objective, with its resolved (student, teacher) index pairs.

    `pairs` are attention layers for attention_mse, hidden-state entries for embedding_mse and
    hidden_mse, and empty for the logit losses.
    """

    kind: str
    weight: float = 1.0
    pairs: tuple[tuple[int, int], ...] = ()
    temperature: float = 1.0

    @property
    def info(self) -> LossKindInfo:
        return LOSS_KINDS[self.kind]
