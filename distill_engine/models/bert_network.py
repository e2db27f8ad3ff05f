"""The base of the families whose network is BERT's with a variant or two (RoBERTa and XLM-R,
DistilBERT, ELECTRA): their configs are `BertConfig` subclasses (the class tells `family_of` which
family a config is) with the variant fields set (`BertConfig.position_ids`, `embedding_size`,
`type_vocab_size`, `pooler_activation`), so the numpy reference and each backend's BERT network
compute them unchanged. What a family here owns is its Hugging Face side: the config.json's keys and
class names, the tensor names (a base-model prefix, the sequence head's names, DistilBERT's layer
names), the tensors to drop, and its tokenizer.

The sequence head of every family is BERT's pooled head under other names: `pooler.dense`, its
activation, then `classifier` (no dropout at inference), which is RoBERTa's and ELECTRA's
`classifier.dense -> tanh | gelu -> classifier.out_proj` and DistilBERT's
`pre_classifier -> relu -> classifier`, all on the first token. The `pooled` tap is that activation's
output. The token and span heads (`classifier`, `qa_outputs` on every position) are named as BERT's
in every family.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import attrs
import numpy as np

from distill_engine.bert import BertConfig
from distill_engine.errors import CheckpointError
from distill_engine.models.builtin import BertFamily

# the families whose network is BERT's: each backend registers its BERT network for every one
BERT_NETWORK_FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra")
POOLED_HEAD = {"pooler.dense": "classifier.dense", "classifier": "classifier.out_proj"}


class BertNetworkFamily(BertFamily):
    """A family on BERT's network. Subclasses set the class attributes below."""

    hf_prefix: str = "bert"            # the base model's attribute in the task classes ("roberta.")
    hf_class: str = "Bert"             # the Hugging Face class names' stem ("Roberta" -> RobertaModel)
    variant: dict = {}                 # the BertConfig variant fields of every config of the family
    pooled_head: dict = POOLED_HEAD    # canonical -> Hugging Face names of the sequence head
    hf_has_pooler = False              # whether the base model (no head) has BERT's pooler
    hf_dropped: tuple[str, ...] = ()   # Hugging Face tensors the engine does not model (pre-training heads)

    # --- config ----------------------------------------------------------------------------------
    def cast(self, config: BertConfig):
        """`config` as this family's config class, with its variant fields."""
        return self.config_class(**{**attrs.asdict(config, recurse=False), **self.variant})

    def hf_fields(self, data: dict) -> dict:
        """A config.json's dict under BERT's key names (DistilBERT renames); also what a check of the
        raw file reads (`planning._precheck`)."""
        return data

    def config_from_hf(self, data: dict, path: Path):
        kind = data.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise CheckpointError(f'{path}: position_embedding_type "{kind}" is not supported by the {self.name} '
                                  'family (absolute positions only)')
        data = self.hf_fields(data)
        architectures = [re.sub(f"^{self.hf_class}", "Bert", a) for a in data.get("architectures", []) or []]
        return self.cast(super().config_from_hf({**data, "architectures": architectures}, path))

    def config_to_hf(self, config) -> dict:
        data = super().config_to_hf(config)
        return {**data, "model_type": self.hf_model_types[0],
                "architectures": [re.sub("^Bert", self.hf_class, a) for a in data["architectures"]]}

    def config_from_dict(self, data: dict):
        return self.cast(BertConfig.from_dict(data))

    def student_config(self, teacher, **sizes):
        # the teacher's vocabulary, positions, token types and head activation; embeddings as wide as
        # the student (ELECTRA's embedding_size is the student's hidden_size)
        student = super().student_config(teacher, **sizes)
        return attrs.evolve(self.cast(student), pooler_activation=teacher.pooler_activation)

    # --- names ------------------------------------------------------------------------------------
    def layer_names_from_hf(self, name: str) -> str:
        """A layer tensor's Hugging Face name to BERT's (DistilBERT renames); identity here."""
        return name

    def layer_names_to_hf(self, name: str) -> str:
        return name

    def from_hf_names(self, tensors: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
        from_head = {hf: canon for canon, hf in self.pooled_head.items()}
        renamed = {}
        for name, value in tensors.items():
            name = name.removeprefix(self.hf_prefix + ".")
            if name.startswith(self.hf_dropped) or name == "embeddings.token_type_ids":  # a buffer
                continue
            stem, dot, leaf = name.rpartition(".")
            # a sequence head's tensors (RobertaForSequenceClassification's classifier.out_proj; the
            # token head's classifier.weight has the stem "classifier", no Hugging Face head name there)
            stem = from_head.get(stem, stem)
            renamed[self.layer_names_from_hf(stem + dot + leaf)] = value
        return super().from_hf_names(renamed, source)

    def to_hf_names(self, config, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sequence_head = bool(config.num_labels) and config.head == "pooled"
        out = {}
        for name, value in state.items():
            stem, dot, leaf = name.rpartition(".")
            if stem in self.pooled_head and (sequence_head or stem == "pooler.dense"):
                if sequence_head:
                    out[self.pooled_head[stem] + dot + leaf] = value
                elif self.hf_has_pooler and not config.num_labels:  # the base model's own pooler
                    out[name] = value
                continue  # a token or span head's class, or a base model without a pooler: none
            if name.startswith(("classifier.", "qa_outputs.", "fit_dense")):
                out[name] = value
                continue
            name = self.layer_names_to_hf(name)
            out[f"{self.hf_prefix}.{name}" if config.num_labels else name] = value
        return out
