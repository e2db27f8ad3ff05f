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

LOGIT_KINDS = ("soft_cross_entropy", "hard_cross_entropy", "mse")
_QK = ("attention.self.query.", "attention.self.key.")


def used_parameters(config: BertConfig, graph: DistillGraph) -> set[str]:
    """Canonical names of the student parameters that receive a gradient from `graph`'s objective.

    Hidden-state entry j depends on the embeddings and layers 0..j-1; layer i's attention scores on
    those of entries 0..i plus layer i's query and key; logits on everything but the projections.
    """
    names = list(parameter_shapes(config))
    if any(t.kind in LOGIT_KINDS for t in graph.terms):
        used = {n for n in names if not n.startswith("fit_dense")}
    else:
        used = set()
    full_layers = 0  # layers 0..full_layers-1 are used whole
    for term in graph.terms:
        if term.kind in ("embedding_mse", "hidden_mse"):
            for s, _ in term.pairs:
                full_layers = max(full_layers, s)
                if config.projection != "none":
                    used.update(projection_names(config, s))
        elif term.kind == "attention_mse":
            for s, _ in term.pairs:
                full_layers = max(full_layers, s)
                used.update(f"encoder.layer.{s}.{p}{w}" for p in _QK for w in ("weight", "bias"))
    if full_layers or any(t.kind in ("embedding_mse", "hidden_mse", "attention_mse") for t in graph.terms):
        used.update(n for n in names if n.startswith("embeddings."))
        used.update(n for n in names for i in range(full_layers) if n.startswith(f"encoder.layer.{i}."))
    return used
