"""Hypothesis strategies for backend tests: model sizes, padded batches, losses and mappings."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from distill_engine.bert import BertConfig
from distill_engine.graph.taps import HEADS
from distill_engine.tasks.token.encoding import IGNORE_LABEL

VOCAB = 40
TRAINED_PROJECTIONS = ("shared", "paper", "per_entry")  # bert.PROJECTION_MODES but "none"


@st.composite
def bert_configs(draw, *, num_labels=None, projection_dim=None, heads=None, head="pooled") -> BertConfig:
    """Small BERT shapes: 1-3 layers, 1-4 heads of width 2-8, any intermediate size. `head`: the
    model's head (`BertConfig.head`), or None to draw one of `graph.taps.HEADS` (a span head has
    2 labels; a model drawn without labels has the pooled head's "no head")."""
    h = heads or draw(st.integers(1, 4))
    head = draw(st.sampled_from(HEADS)) if head is None else head
    shape = dict(
        vocab_size=VOCAB, hidden_size=h * draw(st.integers(2, 8)), num_hidden_layers=draw(st.integers(1, 3)),
        num_attention_heads=h, intermediate_size=draw(st.integers(2, 24)), max_position_embeddings=16,
        hidden_act=draw(st.sampled_from(["gelu", "gelu", "relu", "gelu_new"])),
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2,
        num_labels=draw(st.integers(1, 3)) if num_labels is None else num_labels,
        projection=draw(st.sampled_from(TRAINED_PROJECTIONS)) if projection_dim else "none",
        projection_dim=projection_dim or 0)
    if head == "span":
        shape["num_labels"] = 2
    return BertConfig(**shape, head=head if shape["num_labels"] else "pooled")


@st.composite
def batches(draw, *, max_batch: int = 3, max_length: int = 12, num_labels: int = 2,
            per_position: bool = False, span: bool = False) -> dict[str, np.ndarray]:
    """A batch with trailing padding (at least one real token per row), two segments, labels: a
    class per row, or with `per_position` a tag per position [B, L] as the token task encodes them
    (-100 at [CLS], padding and some real positions: a word's later pieces), or with `span` an
    answer's start and end positions [B, 2] inside each row's real tokens, as the span task encodes
    them ((0, 0), [CLS], for some rows: a window without the answer)."""
    b = draw(st.integers(1, max_batch))
    length = draw(st.integers(2, max_length))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lengths = [draw(st.integers(1, length)) for _ in range(b)]
    mask = np.array([[1] * n + [0] * (length - n) for n in lengths], np.int32)
    split = rng.integers(0, length, size=(b, 1))
    if per_position:
        tagged = (mask == 1) & (rng.random((b, length)) < 0.7)
        tagged[:, 0] = False  # [CLS]
        labels = np.where(tagged, rng.integers(0, max(num_labels, 1), size=(b, length)), IGNORE_LABEL)
    elif span:
        start = np.array([rng.integers(0, n) for n in lengths])
        end = np.array([rng.integers(s, n) for s, n in zip(start, lengths)])
        labels = np.where(rng.random((b, 1)) < 0.3, 0, np.stack([start, end], axis=1))
    else:
        labels = rng.integers(0, max(num_labels, 1), size=b)
    return {
        "input_ids": (rng.integers(1, VOCAB, size=(b, length)) * mask).astype(np.int32),
        "token_type_ids": ((np.arange(length)[None] >= split) * mask).astype(np.int32),
        "attention_mask": mask,
        "labels": labels.astype(np.int32),
    }
