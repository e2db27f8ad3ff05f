"""The terms of a phase's objective: one registered loss kind each, with its resolved pairs and parameters.

The loss kinds themselves (name, what they read, parameters, exact formula, numpy reference) are
plugins: `distill_engine.losses` (the built-in ones in `distill_engine.losses.builtin`).
`distill-engine losses` prints them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from distill_engine.losses import LossDefinition, get_loss

# The losses' shared rule for mask_padding, printed by `distill-engine losses` beside the formulas.
MASKED_FORMULA = (
    "with a phase's mask_padding = true, every loss that compares token positions averages over real "
    "positions only (m = attention mask, l_b = sum_i m[b, i]): e.g. hidden_mse "
    "sum_{b,i} m[b,i] sum_H (H_S W^T + b - H_T)^2 / (H_T sum_b l_b), attention_mse "
    "sum_{b,h,i,j} m[b,i] m[b,j] (c(A_S) - c(A_T))^2 / (h sum_b l_b^2); a loss then does not depend on how far "
    "its batch is padded, and the teacher-output cache (real positions only) can serve it.")


def tap_name(reads: str, index: int) -> str:
    """The `Taps.named()` name of one compared tensor: hidden-state entry / attention layer `index`."""
    if reads in ("embeddings", "hidden"):
        return "embeddings" if index == 0 else f"hidden.{index}"
    if reads == "attention":
        return f"attention.{index}"
    if reads == "values":
        return f"value.{index}"
    return "logits"


@attrs.frozen
class LossRequest:
    """One loss of a phase as asked for, before it is resolved against the models: its kind,
    weight, parameters by name (missing ones take their defaults) and its own layer mapping
    (None: the kind's default mapping, else the phase's)."""

    kind: str
    weight: float = 1.0
    params: Mapping[str, Any] = attrs.field(factory=dict)
    mapping: Any = None  # a graph.mapping.LayerMapping, or None


@attrs.frozen
class LossTerm:
    """One weighted term of a phase's objective, resolved.

    `pairs` are (student, teacher) indices: attention layers (0-based) for "attention" and
    "values" losses, hidden-state entries (0 = embeddings) for "embeddings" and "hidden" losses,
    empty for logit losses. `params` are the loss's parameter values in its definition's order.
    `key` names the term in logs and in the trainers' results: the kind, or "<kind>_<n>" for the
    n-th term of a kind that a phase uses more than once.
    """

    kind: str
    weight: float = 1.0
    pairs: tuple[tuple[int, int], ...] = ()
    params: tuple = ()
    key: str = ""
    # the kind's definition as build_graph resolved it: trainers read it every step, and a
    # registry lookup per read would check the plugin set each time
    resolved: LossDefinition | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def name(self) -> str:
        return self.key or self.kind

    @property
    def definition(self) -> LossDefinition:
        return self.resolved if self.resolved is not None else get_loss(self.kind)

    @property
    def student_taps(self) -> tuple[str, ...]:
        reads = self.definition.reads
        return ("logits",) if reads == "logits" else tuple(tap_name(reads, s) for s, _ in self.pairs)

    @property
    def teacher_taps(self) -> tuple[str, ...]:
        d = self.definition
        if not d.needs_teacher:
            return ()
        return ("logits",) if d.reads == "logits" else tuple(tap_name(d.reads, t) for _, t in self.pairs)
