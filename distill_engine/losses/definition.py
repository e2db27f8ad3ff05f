"""What a loss kind is: its name, what it reads, its parameters, its exact formula and its numpy reference.

A loss kind is declared once, framework-free, as a `LossDefinition`, and registered through the
`register_losses` hook; each backend's implementation is registered beside it through
`register_loss_implementations` (docs/writing-a-loss.md). Every implementation, the numpy
reference included, is called the same way:

    value = impl(student, teacher, mask, labels, params)

- `student`, `teacher`: tuples of the compared tensors, one per mapped (student, teacher) pair,
  in the mapping's order (see `READS`); for a logit loss one element each (`teacher` is empty
  when the loss needs no teacher). A loss with `projected = True` gets the student's hidden
  states already through the student's projection (TinyBERT's fit_dense), so both sides have
  the teacher's width.
- `mask`: the batch's attention mask as float [B, L] when the phase sets `mask_padding` (the
  loss then averages over real token positions only), else None (every position counts,
  padding included, as the PyTorch original does at its fixed length).
- `labels`: the gold labels [B] (class ids, or float scores for regression) or None.
- `params`: the loss's parameter values in the order of `LossDefinition.params` (plain Python
  values: a compiling backend traces them as constants).

It returns a scalar: a float for the reference, a 0-d tensor of the framework for a backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from distill_engine.errors import RecipeError

# What a loss compares, and so what its `student` / `teacher` tuples hold:
#   "attention":  raw attention scores QK^T/sqrt(d_head) + (1 - mask) * -10000, [B, h, L, L], one
#                 pair per mapped attention layer (0-based layer i of the student, g(i+1)-1 of the teacher)
#   "values":     the self-attention value vectors of those layers, [B, h, L, d_head]
#   "embeddings": hidden-state entry 0 (the embedding output), [B, L, H]
#   "hidden":     hidden-state entries j >= 1 (layer outputs) of the mapped layers, [B, L, H]
#   "logits":     the head's output: [B, C] for the pooled head, [B, L, C] / [B, L, 2] for the token /
#                 span heads (distill_engine.graph.taps.HEAD_LOGITS); a logit loss names the heads
#                 whose logits it takes in `LossDefinition.heads`
READS = ("attention", "values", "embeddings", "hidden", "logits")


@attrs.frozen
class LossParam:
    """One parameter of a loss kind, as recipes write it: `temperature = 2.0` in the loss's table.

    `default` fixes the type (float, bool or str); a float may have an inclusive range
    [`low`, `high`] (`low_open`: low excluded); a str one of `choices`.
    """

    name: str
    default: float | bool | str
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if isinstance(self.default, bool):
            kind = "true or false"
        elif isinstance(self.default, str):
            kind = " | ".join(f'"{c}"' for c in self.choices)
        else:
            lo = "" if self.low is None else f"{self.low:g} {'<' if self.low_open else '<='} "
            hi = "" if self.high is None else f" <= {self.high:g}"
            kind = f"{lo}x{hi}" if lo or hi else "a number"
        default = str(self.default).lower() if isinstance(self.default, bool) else repr(self.default)
        return f"{self.name} ({kind}, default {default}): {self.doc}"

    def check(self, value: Any, where: str) -> float | bool | str:
        """The value a recipe gave, checked against this parameter; a `RecipeError` naming `where`."""
        if isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise RecipeError(f"{where}: expected true or false, got {value!r}")
            return value
        if isinstance(self.default, str):
            if value not in self.choices:
                raise RecipeError(f"{where}: {value!r} is not one of {', '.join(map(repr, self.choices))}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        if value != value or self.low is not None and (value < self.low or self.low_open and value == self.low) \
                or self.high is not None and value > self.high:
            raise RecipeError(f"{where}: {value:g} is out of range ({self.describe().split(': ')[0]})")
        return value


@attrs.frozen
class LossDefinition:
    """A loss kind, specified once for every backend.

    `formula` is the exact definition (what `distill-engine losses` prints and what every
    implementation must compute); `reference(student, teacher, mask, labels, params)` computes it
    in numpy float64 (the conformance suite's oracle). `reads` is one of `READS`. `projected`:
    the student's hidden states go through its projection first (a loss that compares widths
    needs it when the student is narrower). `same_heads`: the student and the teacher must have
    as many attention heads (head widths may differ). `positions`: the loss compares token
    positions, so `mask_padding` applies and the teacher-output cache needs it (every loss that
    reads "attention", "values", "embeddings" or "hidden" but only [CLS] sets it to False).
    `mapping`: the layer-mapping strategy a term of this kind uses when its recipe table names
    none ("" = the phase's mapping; e.g. "last" for MiniLM's last-layer losses).
    `heads`: for a loss that reads "logits", the model heads (`BertConfig.head`,
    `distill_engine.graph.taps.HEADS`) whose logits its implementations take; the built-in ones
    take the pooled head's [B, C] only, and the distillation graph refuses them on a model with
    another head.
    """

    name: str
    reads: str = attrs.field(validator=attrs.validators.in_(READS))
    formula: str
    reference: Callable[..., float]
    summary: str = ""
    needs_teacher: bool = True
    needs_labels: bool = False
    projected: bool = False
    same_heads: bool = False
    positions: bool = attrs.field()
    params: tuple[LossParam, ...] = ()
    mapping: str = ""
    heads: tuple[str, ...] = ("pooled",)

    @positions.default
    def _positions(self) -> bool:
        return self.reads != "logits"

    def param(self, name: str) -> LossParam | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def defaults(self) -> tuple:
        return tuple(p.default for p in self.params)


def implementations(definitions, module: str) -> dict[str, str]:
    """{kind: "module:function"} of `definitions`, for a backend whose `module` names each
    implementation like the kind's numpy reference (what its plugin registers through
    `register_loss_implementations`, without importing the framework)."""
    return {d.name: f"{module}:{d.reference.__name__}" for d in definitions}
