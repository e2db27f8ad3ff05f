"""Encoded (token-id) datasets as plain NumPy arrays, and the deterministic batch order every backend shares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np

from distill_engine.errors import DataError

_FEATURES = ("input_ids", "token_type_ids", "attention_mask")


def _as_int32(value) -> np.ndarray:
    return np.asarray(value, dtype=np.int32)


def _as_labels(value) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value)
    # Float labels mean regression (STS-B); everything else is a class index.
    if arr.dtype.kind == "f":
        return arr.astype(np.float32, copy=False)
    return arr.astype(np.int32, copy=False)


# eq=False: element-wise `==` on arrays has no single truth value, so identity equality is
# the only honest default for a container of arrays.
@attrs.frozen(eq=False)
class EncodedDataset:
    """Token ids, segment ids and attention mask for N rows of length L, plus optional labels.

    `labels` has one entry per row along its first axis: [N] for a label per sequence (class ids,
    or float scores for regression), [N, ...] for a task type whose rows carry more (a tag per
    token, a start and an end). `example_index` maps rows back to the examples they came from
    (a task type may cut one example into several rows, as QA windows do); None: row i is
    example i."""

    input_ids: np.ndarray = attrs.field(converter=_as_int32)
    token_type_ids: np.ndarray = attrs.field(converter=_as_int32)
    attention_mask: np.ndarray = attrs.field(converter=_as_int32)
    labels: np.ndarray | None = attrs.field(default=None, converter=_as_labels)
    example_index: np.ndarray | None = attrs.field(default=None, converter=attrs.converters.optional(
        lambda v: np.asarray(v, dtype=np.int64)))
    # [N, L]: the word of its example each position's piece belongs to, -1 at [CLS], [SEP] and
    # padding (Hugging Face's `BatchEncoding.word_ids()`), for a task type that decodes per word;
    # the models never read it, so batches leave it out
    word_ids: np.ndarray | None = attrs.field(default=None, converter=attrs.converters.optional(_as_int32))
    # [N, L, 2]: the [start, end) characters in its example's text of each position's piece, -1
    # where a position is none of the text's pieces (special tokens, a question, padding), for a
    # task type that cuts its answers out of the text (the span type's contexts); batches leave it out
    offsets: np.ndarray | None = attrs.field(default=None, converter=attrs.converters.optional(_as_int32))

    def __attrs_post_init__(self) -> None:
        shape = self.input_ids.shape
        if len(shape) != 2:
            raise DataError(f"input_ids must be a 2-D [N, L] array, got shape {shape}")
        for name in _FEATURES[1:]:
            other = getattr(self, name).shape
            if other != shape:
                raise DataError(f"{name} has shape {other} but input_ids has shape {shape}")
        if self.labels is not None and (self.labels.ndim == 0 or self.labels.shape[0] != shape[0]):
            raise DataError(f"labels has shape {self.labels.shape} but the dataset has {shape[0]} rows")
        if self.example_index is not None and self.example_index.shape != (shape[0],):
            raise DataError(f"example_index has shape {self.example_index.shape} but the dataset has "
                            f"{shape[0]} rows")
        if self.word_ids is not None and self.word_ids.shape != shape:
            raise DataError(f"word_ids has shape {self.word_ids.shape} but input_ids has shape {shape}")
        if self.offsets is not None and self.offsets.shape != (*shape, 2):
            raise DataError(f"offsets has shape {self.offsets.shape} but input_ids has shape {shape} (expected [N, L, 2])")

    @property
    def examples_of_rows(self) -> np.ndarray:
        """The example each row came from, int64 [N] (row i is example i unless a task type said otherwise)."""
        if self.example_index is None:
            return np.arange(len(self), dtype=np.int64)
        return self.example_index

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def max_length(self) -> int:
        """The padded sequence length L shared by every row."""
        return int(self.input_ids.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        """Real tokens per row (the attention mask's sum), int64 [N]."""
        return self.attention_mask.sum(axis=1, dtype=np.int64)

    def take(self, indices) -> EncodedDataset:
        """Return a new dataset holding the rows at `indices` (any integer index array), in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return EncodedDataset(
            input_ids=self.input_ids[idx],
            token_type_ids=self.token_type_ids[idx],
            attention_mask=self.attention_mask[idx],
            labels=None if self.labels is None else self.labels[idx],
            example_index=None if self.example_index is None else self.example_index[idx],
            word_ids=None if self.word_ids is None else self.word_ids[idx],
            offsets=None if self.offsets is None else self.offsets[idx],
        )

    def head(self, n: int | None) -> EncodedDataset:
        """Return the first `n` rows; `None` or an `n` at least the dataset's length returns `self` unchanged."""
        if n is None or n >= len(self):
            return self
        if n < 0:
            raise DataError(f"head() needs a non-negative row count, got {n}")
        return self.take(np.arange(n))

    def batch(self, indices) -> dict[str, np.ndarray]:
        """Return the rows at `indices` as a dict of arrays keyed by feature name ("labels" only when labelled)."""
        idx = np.asarray(indices, dtype=np.int64)
        out = {name: getattr(self, name)[idx] for name in _FEATURES}
        if self.labels is not None:
            out["labels"] = self.labels[idx]
        return out


# Batch orders `iterate_batches` knows (the recipe's data.batching).
BATCHINGS = ("fixed", "bucketed")
# "bucketed": the shuffled rows are sorted by length within windows of this many batches, the
# "mega-batch" of fairseq and of Hugging Face's group_by_length (50 batches there too). A larger
# window makes batches more length-homogeneous (less padding) and their contents less random.
BUCKET_WINDOW = 50


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches `iterate_batches` yields for `n` rows (either batching): floor division when dropping the last partial batch, ceiling otherwise."""
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    if drop_last:
        return n // batch_size
    return -(-n // batch_size)


def _cut(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def batch_order(
    data: EncodedDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    drop_last: bool = False,
    batching: str = "fixed",
    window: int = BUCKET_WINDOW,
) -> list[np.ndarray]:
    """The row indices of each batch of one epoch, in the order `iterate_batches` yields them.

    "fixed": `np.random.default_rng([seed, epoch]).permutation(n)` cut into batches (file order
    without `shuffle`); `drop_last` drops the last partial batch.

    "bucketed" (length-aware): the same permutation, less its last `n % batch_size` rows with
    `drop_last` (the rows "fixed" drops), is cut into windows of `window` batches; each window is
    sorted by real length (attention-mask sum, stable) and cut into batches; then the same
    generator shuffles the order of all the epoch's batches. Without `shuffle`: the rows sorted
    by length (stable), cut into batches, shortest first (evaluation's order).

    Pure numpy on (seed, epoch) only: the same batches on every backend, every row once per epoch.
    """
    if batching not in BATCHINGS:
        raise DataError(f"unknown batching {batching!r}; allowed: {', '.join(BATCHINGS)}")
    if window < 1:
        raise DataError(f"the bucketing window must be at least 1 batch, got {window}")
    n = len(data)
    count = num_batches(n, batch_size, drop_last)
    rng = np.random.default_rng([seed, epoch]) if shuffle else None
    order = rng.permutation(n) if shuffle else np.arange(n)
    if batching == "fixed":
        return _cut(order, batch_size)[:count]
    order = order[: count * batch_size] if drop_last else order
    lengths = data.lengths
    if not shuffle:
        return _cut(order[np.argsort(lengths[order], kind="stable")], batch_size)
    span = window * batch_size  # a multiple of batch_size: only the epoch's last batch can be partial
    batches = []
    for w in range(0, len(order), span):
        rows = order[w : w + span]
        batches.extend(_cut(rows[np.argsort(lengths[rows], kind="stable")], batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def iterate_batches(data: EncodedDataset, batch_size: int, *, start: int = 0, **order: Any
                    ) -> Iterator[dict[str, np.ndarray]]:
    """Yield batches (dicts as from `EncodedDataset.batch`) covering each row once per epoch, in the order of `batch_order`, which takes the other keywords (`shuffle`, `seed`, `epoch`, `drop_last`, `batching`, `window`). "fixed" with `shuffle`: `np.random.default_rng([seed, epoch]).permutation(n)`, so the order depends only on seed and epoch and is identical on every backend; without: file order; "bucketed": length-homogeneous batches. `start` skips the epoch's first batches (a resumed run continues mid-epoch: the k-th batch is the same as in an uninterrupted epoch)."""
    for rows in batch_order(data, batch_size, **order)[start:]:
        yield data.batch(rows)


def padded_length(longest: int, multiple: int, length: int) -> int:
    """The columns a batch keeps: its longest real sequence (at least 1) rounded up to `multiple`, at most `length`."""
    if multiple < 1:
        raise DataError(f"pad_to_multiple_of must be at least 1, got {multiple}")
    return min(length, -(-max(longest, 1) // multiple) * multiple)


def trim_padding(batch: dict[str, np.ndarray], multiple: int = 16) -> dict[str, np.ndarray]:
    """Cut a batch's columns to its longest real sequence, rounded up to `multiple`.

    Padding costs as much compute as real tokens; SST-2 sentences average about a fifth of
    the 64-token maximum. Rounding to a multiple keeps the number of distinct shapes small,
    which matters to compiled backends (each new shape is a new graph). Note that the
    distillation MSEs average over the positions present, so trimming changes the losses'
    normalisation (not what is learnt from the real tokens) compared with fixed-length batches.
    """
    length = batch["attention_mask"].shape[1]
    keep = padded_length(int(batch["attention_mask"].sum(axis=1).max()), multiple, length)
    if keep == length:
        return batch
    return {k: (v[:, :keep] if k in _FEATURES or k == "labels" and per_position_labels(v, length) else v)
            for k, v in batch.items()}


def per_position_labels(labels, length: int) -> bool:
    """Whether a batch's labels are one per position ([B, L]: a tag per word piece, cut with the
    features) rather than per row ([B] classes or scores, [B, 2] answer spans; a row of 2 positions
    holds only [CLS] and [SEP], so [B, 2] spans and [B, L] tags never meet)."""
    return labels is not None and np.ndim(labels) == 2 and np.shape(labels)[1] == length
