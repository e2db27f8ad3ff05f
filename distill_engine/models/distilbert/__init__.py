"""DistilBERT: BERT's encoder without token types (`type_vocab_size` 0) under its own names
(`distilbert.transformer.layer.N.attention.q_lin`, `sa_layer_norm`, `ffn.lin1`, ...; the engine's
canonical names are BERT's), its config.json's own keys (dim, n_layers, n_heads, hidden_dim,
activation, dropout, attention_dropout), LayerNorm eps 1e-12, and the sequence head
`pre_classifier -> ReLU -> classifier` on the first token (canonical `pooler.dense` with
`pooler_activation = "relu"`, then `classifier`). DistilBertModel has no pooler."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from distill_engine.bert import BertConfig
from distill_engine.errors import CheckpointError
from distill_engine.hookspecs import hookimpl
from distill_engine.models.bert_network import BertNetworkFamily

# DistilBERT's config.json keys -> BERT's
HF_KEYS = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
           "hidden_dim": "intermediate_size", "activation": "hidden_act", "dropout": "hidden_dropout_prob",
           "attention_dropout": "attention_probs_dropout_prob"}
# a layer's tensors: DistilBERT's names -> BERT's (after "transformer.layer.N." / "encoder.layer.N.")
LAYER_NAMES = {"attention.q_lin": "attention.self.query", "attention.k_lin": "attention.self.key",
               "attention.v_lin": "attention.self.value", "attention.out_lin": "attention.output.dense",
               "sa_layer_norm": "attention.output.LayerNorm", "ffn.lin1": "intermediate.dense",
               "ffn.lin2": "output.dense", "output_layer_norm": "output.LayerNorm"}
_LAYER = re.compile(r"^(transformer|encoder)\.layer\.(\d+)\.(.+)\.(weight|bias)$")


@attrs.frozen
class DistilBertConfig(BertConfig):
    """BERT's fields without token types (a class of its own: `family_of` tells the families apart)."""


def _rename(name: str, table: dict, root: str) -> str:
    match = _LAYER.match(name)
    if not match or match[3] not in table:
        return name
    return f"{root}.layer.{match[2]}.{table[match[3]]}.{match[4]}"


class DistilBertFamily(BertNetworkFamily):
    name = "distilbert"
    description = "DistilBERT (Hugging Face DistilBertModel / DistilBertFor*; WordPiece vocab.txt)"
    config_class = DistilBertConfig
    hf_model_types = ("distilbert",)
    hf_prefix = "distilbert"
    hf_class = "DistilBert"
    variant = {"type_vocab_size": 0, "pooler_activation": "relu", "layer_norm_eps": 1e-12}
    pooled_head = {"pooler.dense": "pre_classifier", "classifier": "classifier"}
    hf_dropped = ("vocab_transform.", "vocab_layer_norm.", "vocab_projector.")

    def hf_fields(self, data: dict) -> dict:
        out = {HF_KEYS.get(k, k): v for k, v in data.items() if k not in HF_KEYS.values()}
        return {**out, "type_vocab_size": 0}

    def config_from_hf(self, data: dict, path: Path):
        if data.get("sinusoidal_pos_embds"):
            # fixed sinusoids that Hugging Face never trains; the engine would train them
            raise CheckpointError(f"{path}: sinusoidal_pos_embds = true is not supported by the distilbert family "
                                  "(learned position embeddings only)")
        return super().config_from_hf(data, path)

    def config_to_hf(self, config) -> dict:
        data = super().config_to_hf(config)
        back = {bert: hf for hf, bert in HF_KEYS.items()}
        drop = ("type_vocab_size", "layer_norm_eps")  # DistilBertConfig has neither
        return {**{back.get(k, k): v for k, v in data.items() if k not in drop}, "sinusoidal_pos_embds": False}

    def layer_names_from_hf(self, name: str) -> str:
        return _rename(name, LAYER_NAMES, "encoder")

    def layer_names_to_hf(self, name: str) -> str:
        return _rename(name, {v: k for k, v in LAYER_NAMES.items()}, "transformer")


@hookimpl
def register_model_families(register):
    register(DistilBertFamily())
