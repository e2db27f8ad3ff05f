"""Questions and contexts to model rows: windows over the context as Hugging Face's run_qa cuts them,
start/end labels, and the n best spans decoded back into answer texts.

A row is `[CLS] question [SEP] context window [SEP]`, segment 0 up to the first [SEP], 1 after
(BERT's pair encoding). The question keeps its first `max_query_length` pieces; only the context is
cut. The context room of a row is `max_seq_length - len(question) - 3`; consecutive windows overlap
by `doc_stride` pieces (run_qa passes doc_stride to the tokenizer as the overlap of its overflowing
chunks), so window k starts at piece k * (room - doc_stride) and the last one ends at the context's
last piece: every context piece is in a window. `EncodedDataset.example_index` maps each row to its
question and `offsets` each position to the [start, end) characters of its context piece (-1 for the
question, the special tokens and padding), from the tokenizer's offsets into the original context.

Labels [N, 2] are the positions of the answer's first and last pieces in the row: the last piece
that starts at or before the answer's first character, and the first that ends at or after its last
(run_qa's walk). A window that does not hold the whole answer, and a v2.0 question without answer,
is labelled (0, 0): [CLS]. A training question is labelled with its first answer, as run_qa does.
"""

from __future__ import annotations

import bisect

import numpy as np

from distill_engine.data.encoded import EncodedDataset
from distill_engine.errors import DataError, FieldError

NO_OFFSET = -1


def context_windows(n_pieces: int, room: int, doc_stride: int) -> list[tuple[int, int]]:
    """[start, stop) piece ranges of a context of `n_pieces`: `room` pieces each, consecutive ones
    overlapping by `doc_stride`, the last ending at the context's end (one empty window for none)."""
    if room <= doc_stride:
        raise FieldError("doc_stride", f"{doc_stride} leaves no progress: a row has room for {room} context "
                                       f"pieces after a question of max_query_length pieces, and windows overlap "
                                       f"by doc_stride (make doc_stride smaller, max_seq_length larger or "
                                       f"max_query_length smaller)")
    out, start = [], 0
    while True:
        stop = min(start + room, n_pieces)
        out.append((start, stop))
        if stop >= n_pieces:
            return out
        start += room - doc_stride


def answer_pieces(offsets: list[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int]:
    """The context pieces (first, last) an answer of characters [start_char, end_char) spans."""
    starts = [s for s, _ in offsets]
    ends = [e for _, e in offsets]
    first = max(bisect.bisect_right(starts, start_char) - 1, 0)
    last = min(bisect.bisect_left(ends, end_char), len(offsets) - 1)
    return first, max(first, last)


def encode_spans(examples, tokenizer, max_seq_length: int) -> EncodedDataset:
    """Encode `SpanExamples` into rows (see the module's docstring); labels when the examples have answers."""
    task = examples.task
    if max_seq_length < 4:
        raise DataError(f"max_seq_length {max_seq_length} is too small for a span task: [CLS], a question piece, "
                        "[SEP], a context piece and [SEP]")
    # the room of a row with the longest question decides, whatever questions this file has: a
    # recipe that works on one split works on the others
    context_windows(0, max_seq_length - task.max_query_length - 3, task.doc_stride)
    questions = [ids[:task.max_query_length] for ids, _ in tokenizer.encode_offsets(examples.questions)]
    # a paragraph's context is shared by its questions: tokenised once
    unique = list(dict.fromkeys(examples.contexts))
    contexts = dict(zip(unique, tokenizer.encode_offsets(unique)))
    labelled = examples.answers is not None
    rows_ids, rows_types, rows_offsets, rows_labels, rows_example = [], [], [], [], []
    for e, (question, context) in enumerate(zip(questions, examples.contexts)):
        piece_ids, piece_offsets = contexts[context]
        head = [tokenizer.cls_id, *question, tokenizer.sep_id]
        room = max_seq_length - len(head) - 1
        span = None
        if labelled and examples.answers[e] and piece_ids:
            text, start_char = examples.answers[e][0]
            span = answer_pieces(piece_offsets, start_char, start_char + len(text))
        for start, stop in context_windows(len(piece_ids), room, task.doc_stride):
            rows_ids.append(head + list(piece_ids[start:stop]) + [tokenizer.sep_id])
            rows_types.append([0] * len(head) + [1] * (stop - start + 1))
            rows_offsets.append([(NO_OFFSET, NO_OFFSET)] * len(head) + list(piece_offsets[start:stop])
                                + [(NO_OFFSET, NO_OFFSET)])
            inside = span is not None and start <= span[0] and span[1] < stop
            rows_labels.append((span[0] - start + len(head), span[1] - start + len(head)) if inside else (0, 0))
            rows_example.append(e)
    n = len(rows_ids)
    input_ids = np.full((n, max_seq_length), tokenizer.pad_id, np.int32)
    token_types = np.zeros((n, max_seq_length), np.int32)
    attention = np.zeros((n, max_seq_length), np.int32)
    offsets = np.full((n, max_seq_length, 2), NO_OFFSET, np.int32)
    for r in range(n):
        k = len(rows_ids[r])
        input_ids[r, :k] = rows_ids[r]
        token_types[r, :k] = rows_types[r]
        attention[r, :k] = 1
        offsets[r, :k] = rows_offsets[r]
    return EncodedDataset(input_ids, token_types, attention,
                          labels=np.asarray(rows_labels, np.int32).reshape(n, 2) if labelled else None,
                          example_index=np.asarray(rows_example, np.int64), offsets=offsets)


def best_spans(outputs: np.ndarray, data: EncodedDataset, contexts: list[str], n_best_size: int,
               max_answer_length: int) -> list[str]:
    """Each question's answer: over its windows, the n best start and the n best end positions inside
    the context, the pair of highest start + end logit with start <= end and at most
    `max_answer_length` pieces, cut from the context by the offsets; "" when no pair qualifies."""
    outputs = np.asarray(outputs)
    if outputs.ndim != 3 or outputs.shape[:2] != data.input_ids.shape or outputs.shape[2] != 2:
        raise DataError(f"span logits must be [N, L, 2] = [{len(data)}, {data.max_length}, 2], got {outputs.shape}")
    if data.offsets is None:
        raise DataError("the encoded rows carry no offsets: they were not encoded by the span task type")
    best_score = np.full(len(contexts), -np.inf)
    answers = [""] * len(contexts)
    for row, e in enumerate(data.examples_of_rows):
        at = np.flatnonzero(data.offsets[row, :, 0] >= 0)
        if not at.size:
            continue
        starts = at[np.argsort(-outputs[row, at, 0], kind="stable")[:n_best_size]]
        ends = at[np.argsort(-outputs[row, at, 1], kind="stable")[:n_best_size]]
        score = outputs[row, starts, 0][:, None] + outputs[row, ends, 1][None, :]
        length = ends[None, :] - starts[:, None] + 1
        score = np.where((length >= 1) & (length <= max_answer_length), score, -np.inf)
        i, j = np.unravel_index(np.argmax(score), score.shape)
        if score[i, j] > best_score[e]:
            best_score[e] = score[i, j]
            answers[e] = contexts[e][data.offsets[row, starts[i], 0]:data.offsets[row, ends[j], 1]]
    return answers
