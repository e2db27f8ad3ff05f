"""The distillation graph of one phase: which tensors are compared by which loss, resolved and checked.

Built once per phase from the recipe and the two model configs, before any training starts, so
an impossible combination (different head counts under an attention loss, a width mismatch with
no projection, a logit loss on a model with no head) is one clear error naming the recipe field.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from distill_engine.bert import BertConfig
from distill_engine.errors import RecipeError
from distill_engine.graph.losses import LOSS_KINDS, LossTerm
from distill_engine.graph.mapping import LayerMapping


@attrs.frozen
class DistillGraph:
    """The resolved objective of a phase: total = sum(weight * term)."""

    terms: tuple[LossTerm, ...]
    mapping: LayerMapping | None = None
    # True: the intermediate losses (attention_mse, embedding_mse, hidden_mse) average over real
    # token positions only (LOSS_KINDS, "mask_padding"); False: over every position of the batch,
    # padding included, as the PyTorch original does at its fixed length.
    mask_padding: bool = False

    @property
    def teacher_taps(self) -> tuple[str, ...]:
        """The teacher outputs the objective reads, as `Taps.named()` names ("embeddings",
        "hidden.<t>", "attention.<t>", "logits"), sorted. A batch may carry them precomputed
        under "teacher.<name>" (the teacher-output cache), and then no teacher runs."""
        names = set()
        for term in self.terms:
            if term.kind == "attention_mse":
                names.update(f"attention.{t}" for _, t in term.pairs)
            elif term.kind in ("embedding_mse", "hidden_mse"):
                names.update("embeddings" if t == 0 else f"hidden.{t}" for _, t in term.pairs)
            elif term.kind == "soft_cross_entropy":
                names.add("logits")
        return tuple(sorted(names))

    @property
    def needs_teacher(self) -> bool:
        return any(t.info.needs_teacher for t in self.terms)

    @property
    def needs_labels(self) -> bool:
        return any(t.info.needs_labels for t in self.terms)

    @property
    def trains_logits(self) -> bool:
        return any(t.kind in ("soft_cross_entropy", "hard_cross_entropy", "mse") for t in self.terms)

    @property
    def uses_projection(self) -> bool:
        return any(t.kind in ("embedding_mse", "hidden_mse") for t in self.terms)


def build_graph(
    losses: Sequence[tuple[str, float, float]],
    student: BertConfig,
    teacher: BertConfig | None,
    mapping: LayerMapping | None,
    *,
    where: str,
    mask_padding: bool = False,
) -> DistillGraph:
    """Resolve `(kind, weight, temperature)` loss specs against the models; `where` names the recipe
    field in errors (e.g. "phases[1]")."""
    terms = []
    for i, (kind, weight, temperature) in enumerate(losses):
        at = f"{where}.losses[{i}]"
        info = LOSS_KINDS.get(kind)
        if info is None:  # the recipe schema validates names first; this guards direct API use
            raise RecipeError(f"{at}.kind: unknown loss {kind!r}")
        if info.needs_teacher and teacher is None:
            raise RecipeError(f"{at}: loss {kind} needs a teacher, and this phase has none")
        pairs: tuple[tuple[int, int], ...] = ()
        if kind == "attention_mse":
            if student.num_attention_heads != teacher.num_attention_heads:
                raise RecipeError(
                    f"{at}: attention_mse compares attention maps head by head, but the student has "
                    f"{student.num_attention_heads} heads and the teacher {teacher.num_attention_heads}; "
                    f"set student.heads = {teacher.num_attention_heads} or drop the attention loss")
            pairs = mapping.attention
        elif kind in ("embedding_mse", "hidden_mse"):
            if student.projection == "none" and student.hidden_size != teacher.hidden_size:
                raise RecipeError(
                    f"{at}: {kind} needs a projection from the student width {student.hidden_size} to the "
                    f"teacher width {teacher.hidden_size}; set student.projection to \"shared\" or \"per_entry\"")
            if student.projection != "none" and student.projection_dim != teacher.hidden_size:
                raise RecipeError(f"{at}: the student's projection maps to width {student.projection_dim}, "
                                  f"the teacher is {teacher.hidden_size} wide")
            pairs = mapping.hidden[:1] if kind == "embedding_mse" else mapping.hidden[1:]
        elif kind in ("soft_cross_entropy", "hard_cross_entropy", "mse"):
            if not student.num_labels:
                raise RecipeError(f"{at}: {kind} needs a model with a classification head (num_labels > 0)")
            if kind == "soft_cross_entropy" and teacher.num_labels != student.num_labels:
                raise RecipeError(f"{at}: teacher has {teacher.num_labels} labels, student {student.num_labels}")
        if temperature <= 0:
            raise RecipeError(f"{at}.temperature must be > 0, got {temperature}")
        terms.append(LossTerm(kind=kind, weight=float(weight), pairs=pairs, temperature=float(temperature)))
    if not terms:
        raise RecipeError(f"{where}.losses: a training phase needs at least one loss")
    return DistillGraph(terms=tuple(terms), mapping=mapping, mask_padding=mask_padding)
