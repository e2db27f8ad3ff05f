"""The built-in model family, BERT, registered through the same hook as a plugin's family.

Its config, canonical names, shapes and initialisation are `distill_engine.bert`; its numpy
forward is `distill_engine.reference`. The torch and MindSpore backends register their BERT
implementations through `register_model_implementations`, in their own plugin modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from distill_engine import bert, reference
from distill_engine.errors import CheckpointError
from distill_engine.hookspecs import hookimpl

# Hugging Face names that are buffers or heads this engine does not model.
HF_IGNORED_PREFIXES = ("cls.", "embeddings.position_ids", "lm_head.")


class BertFamily:
    name = "bert"
    description = "BERT: Hugging Face BertModel / BertForSequenceClassification names, the MindSpore zoo's BERT"
    config_class = bert.BertConfig
    hf_model_types = ("bert",)
    taps = ("embeddings", "hidden", "attention", "value", "pooled", "logits")

    def config_from_hf(self, data: dict, path: Path) -> bert.BertConfig:
        if data.get("pad_token_id") is None:  # absent or null: BERT's [PAD] is row 0
            data = {**data, "pad_token_id": 0}
        try:
            # BertForSequenceClassification's head is classifier(pooled): "none" unless the file
            # states otherwise (`export --to huggingface` writes the key); the token and span heads,
            # and a model without a head, read it the same (they have no activation to apply)
            return bert.BertConfig.from_dict({"classifier_activation": "none", **data, **bert.hf_head(data)})
        except TypeError as exc:
            raise CheckpointError(f"{path}: {exc}") from None

    def config_to_hf(self, config: bert.BertConfig) -> dict:
        return config.to_hf_config()

    def config_from_dict(self, data: dict) -> bert.BertConfig:
        return bert.BertConfig.from_dict(data)

    def student_config(self, teacher: bert.BertConfig, *, layers: int, hidden_size: int, heads: int,
                       intermediate_size: int, hidden_act: str) -> bert.BertConfig:
        return bert.BertConfig(vocab_size=teacher.vocab_size, hidden_size=hidden_size, num_hidden_layers=layers,
                               num_attention_heads=heads, intermediate_size=intermediate_size,
                               max_position_embeddings=teacher.max_position_embeddings,
                               type_vocab_size=teacher.type_vocab_size, layer_norm_eps=teacher.layer_norm_eps,
                               hidden_act=hidden_act, pad_token_id=teacher.pad_token_id)

    def parameter_shapes(self, config: bert.BertConfig) -> dict[str, tuple[int, ...]]:
        return bert.parameter_shapes(config)

    def init_parameters(self, config: bert.BertConfig, seed: int, only: set[str] | None = None) -> dict:
        return bert.init_parameters(config, seed, only)

    def from_hf_names(self, tensors: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
        """Drop the "bert." prefix, old-style LayerNorm gamma/beta, buffers and pre-training heads."""
        out: dict[str, np.ndarray] = {}
        for name, value in tensors.items():
            canon = name.removeprefix("bert.")
            canon = canon.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
            if canon.startswith(HF_IGNORED_PREFIXES):
                continue
            if canon in out:
                raise CheckpointError(f"{source}: tensor {canon} appears twice (with and without 'bert.')")
            out[canon] = np.asarray(value, np.float32)
        return out

    def to_hf_names(self, config: bert.BertConfig, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The names of the head's Hugging Face class (BertFor{Sequence,Token}Classification,
        BertForQuestionAnswering: "bert." before the encoder) for a model with a head, BertModel's
        (as they are) without; the heads (classifier.*, qa_outputs.*) and fit_dense* keep their names."""
        if not config.num_labels:
            return dict(state)
        return {(k if k.startswith(("classifier.", "qa_outputs.", "fit_dense")) else "bert." + k): v
                for k, v in state.items()}

    def reference_forward(self, config: bert.BertConfig, state, batch):
        return reference.forward(config, state, batch)

    # the tokenizer's files in a checkpoint directory: the first is the one `tokenizer` reads, the
    # others go beside it (RoBERTa's merges.txt beside its vocab.json)
    vocab_files: tuple[str, ...] = ("vocab.txt",)
    # whether the Hugging Face base model (no head) has BERT's pooler: an import without one gets a
    # fresh one (checkpoint.load_huggingface), an export without a head writes none
    hf_has_pooler = True

    def tokenizer(self, vocab: Path, lowercase: bool):
        from distill_engine.data.tokenizer import WordPieceTokenizer

        return WordPieceTokenizer(vocab, lowercase=lowercase)

    def check_vocab(self, vocab: Path) -> int:
        """The size of the vocabulary file `vocab`, checked as `tokenizer` reads it (a DataError naming it)."""
        from distill_engine.data.tokenizer import check_vocab

        return check_vocab(vocab)


BERT = BertFamily()


@hookimpl
def register_model_families(register):
    register(BERT)



