"""The distillation graph of one phase: which tensors are compared by which loss, resolved and checked.

Built once per phase from the recipe and the two model configs, before any training starts, so
an impossible combination (different head counts under an attention loss, a width mismatch with
no projection, a logit loss on a model with no head or a head it does not take, a parameter out of
range) is one clear
error naming the recipe field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import attrs

from distill_engine.bert import BertConfig
from distill_engine.errors import RecipeError
from distill_engine.graph.losses import LossRequest, LossTerm
from distill_engine.graph.mapping import LayerMapping, build_mapping
from distill_engine.graph.taps import HEAD_LOGITS as _LOGITS
from distill_engine.losses import get_loss, loss_definitions


@attrs.frozen
class DistillGraph:
    """The resolved objective of a phase: total = sum(weight * term)."""

    terms: tuple[LossTerm, ...]
    mapping: LayerMapping | None = None
    # True: the losses that compare token positions average over real positions only
    # (graph.losses.MASKED_FORMULA); False: over every position of the batch, padding included,
    # as the PyTorch original does at its fixed length.
    mask_padding: bool = False

    @property
    def teacher_taps(self) -> tuple[str, ...]:
        """The teacher outputs the objective reads, as `Taps.named()` names ("embeddings",
        "hidden.<t>", "attention.<t>", "value.<t>", "logits"), sorted. A batch may carry them
        precomputed under "teacher.<name>" (the teacher-output cache), and then no teacher runs."""
        return tuple(sorted({name for term in self.terms for name in term.teacher_taps}))

    @property
    def needs_teacher(self) -> bool:
        return any(t.definition.needs_teacher for t in self.terms)

    @property
    def needs_labels(self) -> bool:
        return any(t.definition.needs_labels for t in self.terms)

    @property
    def trains_logits(self) -> bool:
        return any(t.definition.reads == "logits" for t in self.terms)

    @property
    def needs_values(self) -> bool:
        return any(t.definition.reads == "values" for t in self.terms)

    @property
    def uses_projection(self) -> bool:
        return any(t.definition.projected for t in self.terms)

    @property
    def compares_positions(self) -> bool:
        return any(t.definition.positions for t in self.terms)


def _request(item, where: str) -> LossRequest:
    """A `LossRequest`, or the shorthand tuple (kind, weight[, temperature]) that tests and
    benchmarks use (the temperature applies to a loss that has one)."""
    if isinstance(item, LossRequest):
        return item
    kind, weight, *rest = item
    params = {}
    if rest and get_loss(kind, f"{where}.kind").param("temperature") is not None:
        params["temperature"] = rest[0]
    return LossRequest(kind, weight, params)


def build_graph(
    losses: Sequence[LossRequest | tuple],
    student: BertConfig,
    teacher: BertConfig | None,
    mapping: LayerMapping | None,
    *,
    where: str,
    mask_padding: bool = False,
) -> DistillGraph:
    """Resolve the loss requests of a phase against the models; `mapping` is the phase's (a
    request's own mapping, or its kind's default strategy, takes precedence); `where` names the
    recipe field in errors (e.g. "phases[1]")."""
    requests = [_request(item, f"{where}.losses[{i}]") for i, item in enumerate(losses)]
    counts = Counter(r.kind for r in requests)
    seen: Counter = Counter()
    terms = []
    for i, req in enumerate(requests):
        at = f"{where}.losses[{i}]"
        d = get_loss(req.kind, f"{at}.kind")
        if d.needs_teacher and teacher is None:
            raise RecipeError(f"{at}: loss {d.name} needs a teacher, and this phase has none")
        unknown = sorted(set(req.params) - {p.name for p in d.params})
        if unknown:
            known = ", ".join(p.name for p in d.params) or "none"
            raise RecipeError(f"{at}.{unknown[0]}: loss {d.name} has no parameter {unknown[0]!r} (its parameters: {known})")
        params = tuple(p.check(req.params[p.name], f"{at}.{p.name}") if p.name in req.params else p.default
                       for p in d.params)
        layer_map = req.mapping or mapping
        if req.mapping is None and d.mapping and teacher is not None:
            layer_map = build_mapping(d.mapping, student.num_hidden_layers, teacher.num_hidden_layers, where=f"{at}.mapping")
        if d.same_heads and student.num_attention_heads != teacher.num_attention_heads:
            raise RecipeError(
                f"{at}: {d.name} compares attention heads one by one, but the student has "
                f"{student.num_attention_heads} heads and the teacher {teacher.num_attention_heads}; "
                f"set student.heads = {teacher.num_attention_heads} or drop this loss")
        pairs: tuple[tuple[int, int], ...] = ()
        if d.reads in ("attention", "values"):
            pairs = layer_map.attention
        elif d.reads in ("embeddings", "hidden"):
            if d.projected:
                if student.projection == "none" and student.hidden_size != teacher.hidden_size:
                    raise RecipeError(
                        f"{at}: {d.name} needs a projection from the student width {student.hidden_size} to the "
                        f"teacher width {teacher.hidden_size}; set student.projection to \"shared\", \"paper\" or \"per_entry\"")
                if student.projection != "none" and student.projection_dim != teacher.hidden_size:
                    raise RecipeError(f"{at}: the student's projection maps to width {student.projection_dim}, "
                                      f"the teacher is {teacher.hidden_size} wide")
            elif student.hidden_size != teacher.hidden_size:
                raise RecipeError(f"{at}: {d.name} compares hidden states without a projection, and the student "
                                  f"is {student.hidden_size} wide, the teacher {teacher.hidden_size}")
            pairs = layer_map.hidden[:1] if d.reads == "embeddings" else layer_map.hidden[1:]
        else:
            if not student.num_labels:
                raise RecipeError(f"{at}: {d.name} needs a model with a classification head (num_labels > 0)")
            for who, config in (("student", student), ("teacher", teacher if d.needs_teacher else None)):
                head = getattr(config, "head", "pooled")
                if config is not None and head not in d.heads:
                    takers = [k for k, x in loss_definitions().items() if x.reads == "logits" and head in x.heads]
                    hint = (f"the losses that take a {head} head's logits: {', '.join(takers)}" if takers else
                            f"no registered loss takes a {head} head's logits")
                    raise RecipeError(
                        f'{at}: {d.name} takes the logits of a {" or ".join(d.heads)} head ({_LOGITS[d.heads[0]]}), '
                        f'and the {who} has a {head} head (logits {_LOGITS.get(head, "of another shape")}); {hint}')
            s_head, t_head = getattr(student, "head", "pooled"), getattr(teacher, "head", "pooled")
            if d.needs_teacher and s_head != t_head:
                raise RecipeError(f"{at}: {d.name} compares the student's {s_head} head with the teacher's {t_head} head")
            if d.needs_teacher and teacher.num_labels != student.num_labels:
                raise RecipeError(f"{at}: teacher has {teacher.num_labels} labels, student {student.num_labels}")
        seen[d.name] += 1
        key = d.name if counts[d.name] == 1 else f"{d.name}_{seen[d.name]}"
        terms.append(LossTerm(kind=d.name, weight=float(req.weight), pairs=pairs, params=params, key=key, resolved=d))
    if not terms:
        raise RecipeError(f"{where}.losses: a training phase needs at least one loss")
    return DistillGraph(terms=tuple(terms), mapping=mapping, mask_padding=mask_padding)
