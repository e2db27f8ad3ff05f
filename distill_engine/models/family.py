"""The model-family protocol: what an encoder family (BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA)
owns, so that checkpoints, planning, the numpy reference and the backends need not know which
family a model is.

A family is registered through the `register_model_families` hook; each backend that can build it
registers an implementation through `register_model_implementations` (a "module:attr" string,
imported on first use, so that loading the plugin imports no framework). The engine calls:

    config_class             the frozen attrs class of the family's config (`family_of(config)`
                             finds the family of a config by it)
    hf_model_types           the `model_type` values of a Hugging Face config.json it reads
    config_from_hf / _to_hf  a Hugging Face config.json's dict, both ways
    config_from_dict         the config as a neutral checkpoint's manifest holds it
    student_config           a fresh student of the teacher's family at other sizes
    parameter_shapes         every canonical parameter name with its shape: the one source of truth
    init_parameters          fresh float32 parameters, seeded per name (the same on every backend)
    from_hf_names / to_hf_names   Hugging Face tensor names in and out
    reference_forward        the numpy float64 forward: the oracle every backend is checked against
    tokenizer                the tokenizer of its vocabulary file (BERT's: WordPiece from vocab.txt)
    taps                     the tap kinds its forward offers (`distill_engine.graph.taps.TAP_KINDS`)

and, where a family defines them (BERT's `distill_engine.models.builtin.BertFamily` has defaults):

    vocab_files              its tokenizer's files in a checkpoint directory ("vocab.txt"; RoBERTa's
                             "vocab.json", "merges.txt"): checkpoints and exports carry them
    check_vocab              the size of a vocabulary file, checked as its tokenizer reads it
    hf_has_pooler            whether its Hugging Face base model has BERT's pooler
    hf_fields                a config.json's dict under BERT's key names (DistilBERT's dim, n_layers)
    hf_tokenizer_files       the tokenizer files an export writes (a family not on WordPiece)

A config of any family carries the fields the distillation graph and the planner read:
`vocab_size`, `hidden_size`, `num_hidden_layers`, `num_attention_heads`, `head_dim`,
`max_position_embeddings` (and `max_sequence_length`, the tokens its positions hold), `num_labels`,
`head`, `projection`, `projection_dim`, `pad_token_id`, `hidden_dropout_prob`,
`attention_probs_dropout_prob` and `to_dict()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ModelFamily(Protocol):
    name: str  # what `distill-engine models` lists and a neutral manifest records ("bert")
    description: str
    config_class: type
    hf_model_types: tuple[str, ...]
    taps: tuple[str, ...]

    def config_from_hf(self, data: dict, path: Path) -> Any:
        """The config of a Hugging Face config.json (`data`, read from `path`); `CheckpointError` naming
        `path` for a value the family cannot hold."""

    def config_to_hf(self, config: Any) -> dict:
        """The Hugging Face config.json of `config` (without the engine's projection)."""

    def config_from_dict(self, data: dict) -> Any:
        """The config as `config.to_dict()` wrote it (a neutral checkpoint's manifest)."""

    def student_config(self, teacher: Any, *, layers: int, hidden_size: int, heads: int, intermediate_size: int,
                       hidden_act: str) -> Any:
        """A fresh student of the teacher's family: the teacher's vocabulary, positions and token
        types, the student's sizes."""

    def parameter_shapes(self, config: Any) -> dict[str, tuple[int, ...]]:
        """Every canonical parameter name with its shape, in a stable order."""

    def init_parameters(self, config: Any, seed: int, only: set[str] | None = None) -> dict[str, np.ndarray]:
        """Fresh float32 parameters; each tensor seeded by (seed, its name); `only` restricts the names."""

    def from_hf_names(self, tensors: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
        """A Hugging Face checkpoint's tensors under canonical names (buffers and pre-training heads dropped)."""

    def to_hf_names(self, config: Any, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Canonical names to the family's Hugging Face class's names (the inverse of `from_hf_names`)."""

    def reference_forward(self, config: Any, state: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> Any:
        """The numpy forward of `state` on `batch`: every tap (`distill_engine.graph.Taps`)."""

    def tokenizer(self, vocab: Path, lowercase: bool) -> Any:
        """The tokenizer of the vocabulary file `vocab`, with `encode(texts_a, texts_b, max_length,
        labels)` and `encode_pieces(texts)` as `distill_engine.data.WordPieceTokenizer` has them."""
