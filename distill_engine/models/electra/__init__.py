"""ELECTRA (the discriminator): BERT's encoder whose embeddings may be narrower than the layers
(`embedding_size`: the tables and their LayerNorm at that width, then `embeddings_project` to
hidden_size, before the first layer and the `embeddings` tap), and the sequence head
`classifier.dense -> gelu -> classifier.out_proj` on the first token (canonical `pooler.dense` with
`pooler_activation = "gelu"`, then `classifier`). ElectraModel has no pooler; the discriminator's
and the generator's pre-training heads are dropped on import."""

from __future__ import annotations

import attrs

from distill_engine.bert import BertConfig
from distill_engine.hookspecs import hookimpl
from distill_engine.models.bert_network import BertNetworkFamily


@attrs.frozen
class ElectraConfig(BertConfig):
    """BERT's fields with ELECTRA's embedding width (a class of its own: `family_of` tells the families apart)."""


class ElectraFamily(BertNetworkFamily):
    name = "electra"
    description = "ELECTRA discriminator (Hugging Face ElectraModel / ElectraFor*; WordPiece vocab.txt)"
    config_class = ElectraConfig
    hf_model_types = ("electra",)
    hf_prefix = "electra"
    hf_class = "Electra"
    variant = {"pooler_activation": "gelu"}
    hf_dropped = ("discriminator_predictions.", "generator_predictions.", "generator_lm_head.")

    def config_to_hf(self, config) -> dict:
        return {**super().config_to_hf(config), "embedding_size": config.embedding_width}


@hookimpl
def register_model_families(register):
    register(ElectraFamily())
