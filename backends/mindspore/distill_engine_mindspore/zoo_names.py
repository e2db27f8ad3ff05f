"""MindSpore model-zoo BERT/TinyBERT checkpoint names -> canonical names: plain data and string logic only.

No framework import: this module could move to the core unchanged. The names follow the Cell trees
of the zoo's `bert_model.py` / `tinybert_model.py` (BertModel, TinyBertModel, BertModelCLS) and of
the networks that save them:

    {P}{m}_embedding_lookup.embedding_table                          word embeddings
    {P}{m}_embedding_postprocessor.full_position_embedding.embedding_table
    {P}{m}_embedding_postprocessor.token_type_embedding.embedding_table
    {P}{m}_embedding_postprocessor.layernorm.{gamma,beta}
    ({P}{m}_embedding_postprocessor.embedding_table / .full_position_embeddings in 1.0/1.1 files)
    {P}{m}_encoder.layers.{i}.attention.attention.{query,key,value}_layer.{weight,bias}
    {P}{m}_encoder.layers.{i}.attention.output.{dense.weight,dense.bias,layernorm.gamma,layernorm.beta}
    {P}{m}_encoder.layers.{i}.intermediate.{weight,bias}              (a bare nn.Dense)
    {P}{m}_encoder.layers.{i}.output.{dense.*,layernorm.*}
    {P}dense.{weight,bias}                                            pooler (tanh)
    {H}dense_1.{weight,bias}                                          BertModelCLS classifier
    {H}fit_dense.{weight,bias}                                        the distillation network's projection

`m` is "bert" (BertModel) or "tinybert" (TinyBertModel); `P` is the model's prefix in the saving
network ("" for a bare model, "bert." for a TinyBERT GD student or a BertModelCLS, "bert.bert." for a
pre-trained or fine-tuned BERT); `H` is any enclosing prefix of `P` (the head and the projection sit
beside the model, one or more levels up). nn.Dense stores its weight [out, in], as the canonical
layout does, so no tensor is transposed.

Known tensors that are not model weights are accounted for and dropped: BERT's pre-training heads
(`cls1.*` masked LM, `cls2.*` next sentence) and optimiser/training state (Adam moments, step
counters, learning rate, loss scale). Anything else is reported as unexpected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from distill_engine.errors import CheckpointError

MODEL_KINDS = ("bert", "tinybert")

# Relative to "{P}{m}_".
EMBEDDINGS: dict[str, str] = {
    "embedding_lookup.embedding_table": "embeddings.word_embeddings.weight",
    "embedding_postprocessor.full_position_embedding.embedding_table": "embeddings.position_embeddings.weight",
    "embedding_postprocessor.token_type_embedding.embedding_table": "embeddings.token_type_embeddings.weight",
    "embedding_postprocessor.layernorm.gamma": "embeddings.LayerNorm.weight",
    "embedding_postprocessor.layernorm.beta": "embeddings.LayerNorm.bias",
    # Before the zoo switched to nn.Embedding (MindSpore 1.0/1.1 bert_model.py), the postprocessor
    # held bare Parameters under these names.
    "embedding_postprocessor.embedding_table": "embeddings.token_type_embeddings.weight",
    "embedding_postprocessor.full_position_embeddings": "embeddings.position_embeddings.weight",
}

# Relative to "{P}{m}_encoder.layers.{i}." -> relative to "encoder.layer.{i}.".
LAYER: dict[str, str] = {
    "attention.attention.query_layer.weight": "attention.self.query.weight",
    "attention.attention.query_layer.bias": "attention.self.query.bias",
    "attention.attention.key_layer.weight": "attention.self.key.weight",
    "attention.attention.key_layer.bias": "attention.self.key.bias",
    "attention.attention.value_layer.weight": "attention.self.value.weight",
    "attention.attention.value_layer.bias": "attention.self.value.bias",
    "attention.output.dense.weight": "attention.output.dense.weight",
    "attention.output.dense.bias": "attention.output.dense.bias",
    "attention.output.layernorm.gamma": "attention.output.LayerNorm.weight",
    "attention.output.layernorm.beta": "attention.output.LayerNorm.bias",
    "intermediate.weight": "intermediate.dense.weight",
    "intermediate.bias": "intermediate.dense.bias",
    "output.dense.weight": "output.dense.weight",
    "output.dense.bias": "output.dense.bias",
    "output.layernorm.gamma": "output.LayerNorm.weight",
    "output.layernorm.beta": "output.LayerNorm.bias",
}

# Relative to "{P}".
POOLER: dict[str, str] = {"dense.weight": "pooler.dense.weight", "dense.bias": "pooler.dense.bias"}

# Relative to "{H}", any enclosing prefix of P.
HEAD: dict[str, str] = {"dense_1.weight": "classifier.weight", "dense_1.bias": "classifier.bias"}
PROJECTION: dict[str, str] = {"fit_dense.weight": "fit_dense.weight", "fit_dense.bias": "fit_dense.bias"}

# Accounted for and dropped. Pre-training heads sit beside the model ({H}cls1.*, {H}cls2.*).
PRETRAINING_HEADS = ("cls1.", "cls2.")
# Optimiser and training state saved by the zoo's ModelCheckpoint / TrainOneStep cells.
OPTIMIZER_PREFIXES = ("moment1.", "moment2.", "adam_m.", "adam_v.", "accu_grads.", "exp_avg.", "exp_avg_sq.")
TRAINING_STATE = frozenset({
    "global_step", "learning_rate", "beta1_power", "beta2_power", "scale_sense", "loss_scale",
    "current_iterator_step", "last_overflow_iterator_step", "epoch_num", "step_num",
})

_LOOKUP = re.compile(r"^(?P<prefix>(?:[^.]+\.)*?)(?P<kind>bert|tinybert)_embedding_lookup\.embedding_table$")
_LAYER = re.compile(r"^(?P<index>\d+)\.(?P<rest>.+)$")


def model_prefixes(names) -> list[str]:
    """The model prefixes "{P}{m}_" found in `names` (one per embedding table), in order."""
    found = []
    for name in names:
        match = _LOOKUP.match(name)
        if match:
            found.append(match["prefix"] + match["kind"] + "_")
    return found


def _enclosing(prefix: str) -> list[str]:
    """Every enclosing prefix of a model prefix P: "bert.bert." -> ["bert.bert.", "bert.", ""]."""
    parts = prefix.split(".")[:-1]
    return [".".join(parts[:i]) + "." if i else "" for i in range(len(parts), -1, -1)]


def _is_dropped(name: str, enclosing: list[str]) -> bool:
    if name in TRAINING_STATE or name.startswith(OPTIMIZER_PREFIXES):
        return True
    return any(name.startswith(h + head) for h in enclosing for head in PRETRAINING_HEADS)


def plan(names, num_layers: int, *,
         prefix: str | None = None) -> tuple[dict[str, str], list[str], list[str], list[str]]:
    """Resolve zoo names without touching tensors: ({zoo name: canonical name}, dropped, unexpected, missing).

    `prefix` picks one model ("{P}{m}_", e.g. "bert.tinybert_") when the file holds several (a whole
    distillation network with teacher and student); the other models' tensors are then dropped.
    """
    names = list(names)
    prefixes = model_prefixes(names)
    if prefix is None:
        if len(prefixes) != 1:
            found = ", ".join(repr(p) for p in prefixes) or "none"
            raise CheckpointError(f"expected one BERT/TinyBERT model in the checkpoint, found {len(prefixes)} "
                                  f"(model prefixes: {found}); pass the prefix of the one to load")
        prefix = prefixes[0]
    elif prefix not in prefixes:
        raise CheckpointError(f"no model with prefix {prefix!r} in the checkpoint "
                              f"(found: {', '.join(repr(p) for p in prefixes) or 'none'})")
    others = [p for p in prefixes if p != prefix]
    model_root = prefix.rsplit(".", 1)[0] + "." if "." in prefix else ""  # P, without "{m}_"
    enclosing = _enclosing(model_root)
    mapping: dict[str, str] = {}
    dropped: list[str] = []
    unexpected: list[str] = []
    encoder = prefix + "encoder.layers."
    for name in names:
        canon = None
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if rest in EMBEDDINGS:
                canon = EMBEDDINGS[rest]
            elif rest.startswith("encoder.layers."):
                match = _LAYER.match(name[len(encoder):])
                if match and match["rest"] in LAYER and int(match["index"]) < num_layers:
                    canon = f"encoder.layer.{int(match['index'])}.{LAYER[match['rest']]}"
        elif name.startswith(model_root) and name[len(model_root):] in POOLER:
            canon = POOLER[name[len(model_root):]]
        else:
            for h in enclosing:
                tail = name[len(h):] if name.startswith(h) else None
                if tail in HEAD or tail in PROJECTION:
                    canon = HEAD.get(tail) or PROJECTION[tail]
                    break
        if canon is not None:
            if canon in mapping.values():
                first = next(k for k, v in mapping.items() if v == canon)
                raise CheckpointError(f"tensors {first} and {name} both map to {canon}")
            mapping[name] = canon
        elif _is_dropped(name, enclosing) or any(name.startswith(o) or name.startswith(_owner(o)) for o in others):
            dropped.append(name)
        else:
            unexpected.append(name)
    got = set(mapping.values())
    required = list(dict.fromkeys(EMBEDDINGS.values())) + list(POOLER.values())
    required += [f"encoder.layer.{i}.{c}" for i in range(num_layers) for c in LAYER.values()]
    missing = [zoo_name(c, prefix) for c in required if c not in got]
    for pair in (HEAD, PROJECTION):  # optional, but never half present
        present = [c for c in pair.values() if c in got]
        if present and len(present) != len(pair):
            missing += [zoo_name(c, prefix) for c in pair.values() if c not in got]
    return mapping, dropped, unexpected, missing


def _owner(model_prefix: str) -> str:
    # The pooler of another model in the same file: "{P}dense.*" with P its root.
    root = model_prefix.rsplit(".", 1)[0] + "." if "." in model_prefix else ""
    return root + "dense." if root else "\0"


def zoo_name(canonical: str, prefix: str) -> str:
    """The zoo name a canonical tensor has in a model with prefix "{P}{m}_" (for messages)."""
    root = prefix.rsplit(".", 1)[0] + "." if "." in prefix else ""
    for table, base in ((EMBEDDINGS, prefix), (POOLER, root), (HEAD, root.removesuffix("bert.")),
                        (PROJECTION, root.removesuffix("bert."))):
        for zoo, canon in table.items():
            if canon == canonical:
                return base + zoo
    layer, _, rest = canonical.removeprefix("encoder.layer.").partition(".")
    zoo = next(z for z, c in LAYER.items() if c == rest)
    return f"{prefix}encoder.layers.{layer}.{zoo}"


def zoo_to_canonical(names_to_arrays: Mapping[str, object], num_layers: int, *,
                     prefix: str | None = None) -> dict:
    """Rename a zoo checkpoint's tensors to canonical names. Every tensor must be a model weight of
    the chosen model, a known non-weight (pre-training head, optimiser state), or an error: one
    CheckpointError names every unexpected and every missing tensor. Arrays are passed through
    untouched (no copy, no transpose)."""
    mapping, _, unexpected, missing = plan(names_to_arrays.keys(), num_layers, prefix=prefix)
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected))
    if problems:
        raise CheckpointError(f"MindSpore zoo checkpoint ({num_layers} layers): " + "; ".join(problems))
    return {canon: names_to_arrays[name] for name, canon in mapping.items()}
