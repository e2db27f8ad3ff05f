"""Reading a plain-text pre-training corpus and packing it into fixed-length sequences for general distillation."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from distill_engine.data.encoded import EncodedDataset
from distill_engine.data.textfile import read_text
from distill_engine.data.tokenizer import WordPieceTokenizer
from distill_engine.errors import DataError

# Sentences handed to the tokenizer per batch call: large enough for its thread pool to pay
# off, small enough that an early stop at max_sequences does not tokenise the whole corpus.
_SENTENCES_PER_CALL = 4096


def read_corpus_documents(path) -> list[list[str]]:
    """Read a corpus file with one sentence per line and a blank line between documents; lines are stripped and empty documents dropped."""
    text = read_text(Path(path), "corpus file")
    documents: list[list[str]] = []
    current: list[str] = []
    for line in io.StringIO(text, newline=None):  # universal newlines, as reading the file in text mode
        sentence = line.strip()
        if sentence:
            current.append(sentence)
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    return documents


def _pack_document(pieces_per_sentence: list[list[int]], budget: int, out: list[list[int]]) -> None:
    current: list[int] = []
    for pieces in pieces_per_sentence:
        if not pieces:
            continue
        if len(current) + len(pieces) <= budget:
            current.extend(pieces)
            continue
        if current:
            out.append(current)
            current = []
        if len(pieces) <= budget:
            current = list(pieces)
        else:
            # An over-long sentence becomes rows of its own (the last one possibly short),
            # so every other row still starts at a sentence boundary.
            for start in range(0, len(pieces), budget):
                out.append(list(pieces[start : start + budget]))
    if current:
        out.append(current)


def pack_corpus(
    documents: Iterable[Sequence[str]],
    tokenizer: WordPieceTokenizer,
    max_length: int,
    *,
    max_sequences: int | None = None,
) -> EncodedDataset:
    """Pack documents into single-segment `[CLS] pieces [SEP]` rows of `max_length` (TinyBERT general-distillation data, unmasked): whole sentences are appended greedily while they fit in `max_length - 2` pieces, a longer sentence is cut into chunks of that size, and no row crosses a document boundary. Stops once `max_sequences` rows exist."""
    if max_length < 3:
        raise DataError(f"max_length {max_length} is too small to pack a corpus; need at least 3")
    if max_sequences is not None and max_sequences < 0:
        raise DataError(f"max_sequences must be non-negative, got {max_sequences}")
    budget = max_length - 2
    sequences: list[list[int]] = []

    def flush(group: list[Sequence[str]]) -> None:
        flat = [sentence for doc in group for sentence in doc]
        pieces = tokenizer.encode_pieces(flat)
        at = 0
        for doc in group:
            _pack_document(pieces[at : at + len(doc)], budget, sequences)
            at += len(doc)

    def done() -> bool:
        return max_sequences is not None and len(sequences) >= max_sequences

    group: list[Sequence[str]] = []
    size = 0
    if max_sequences != 0:
        for doc in documents:
            group.append(doc)
            size += len(doc)
            if size >= _SENTENCES_PER_CALL:
                flush(group)
                group, size = [], 0
                if done():
                    break
        if group and not done():
            flush(group)

    if max_sequences is not None:
        sequences = sequences[:max_sequences]
    return tokenizer.encode_ids(sequences, max_length)
