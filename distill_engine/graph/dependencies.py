"""Which student parameters a phase's objective depends on (so optimisers update exactly those).

PyTorch's AdamW skips a parameter whose gradient is None: no Adam step and no weight decay. That
happens to every parameter the objective does not reach (the pooler and classifier in GD/TD1, the
projection in TD2, the top of a layer whose attention scores are the last thing compared). A
compiled MindSpore step gets zeros instead of None, and decoupled weight decay would still shrink
those tensors; so the trainer updates exactly the parameters named here, and both backends train
the same numbers.
"""

from __future__ import annotations

from distill_engine.bert import BertConfig, parameter_shapes, projection_names
from distill_engine.graph import DistillGraph

_QK = ("attention.self.query.", "attention.self.key.")
_V = ("attention.self.value.",)


def used_parameters(config: BertConfig, graph: DistillGraph) -> set[str]:
    """Canonical names of the student parameters that receive a gradient from `graph`'s objective.

    Hidden-state entry j depends on the embeddings and layers 0..j-1; layer i's attention scores on
    those of entries 0..i plus layer i's query and key, its value vectors on layer i's value;
    logits on everything but the projections (and, for a token or span head, which reads the final
    hidden states and not the pooled vector, but the pooler). Derived from what each loss kind reads
    (`LossDefinition.reads`), so a plugin's loss is covered too.
    """
    names = list(parameter_shapes(config))
    if graph.trains_logits:
        pooled = getattr(config, "head", "pooled") == "pooled"
        used = {n for n in names if not n.startswith("fit_dense") and (pooled or not n.startswith("pooler."))}
    else:
        used = set()
    full_layers = 0  # layers 0..full_layers-1 are used whole
    reads_layers = False
    for term in graph.terms:
        reads = term.definition.reads
        if reads in ("embeddings", "hidden"):
            reads_layers = True
            for s, _ in term.pairs:
                full_layers = max(full_layers, s)
                if term.definition.projected and config.projection != "none":
                    used.update(projection_names(config, s))
        elif reads in ("attention", "values"):
            reads_layers = True
            for s, _ in term.pairs:
                full_layers = max(full_layers, s)
                used.update(f"encoder.layer.{s}.{p}{w}" for p in (_QK if reads == "attention" else _V)
                            for w in ("weight", "bias"))
    if full_layers or reads_layers:
        used.update(n for n in names if n.startswith("embeddings."))
        used.update(n for n in names for i in range(full_layers) if n.startswith(f"encoder.layer.{i}."))
    return used
