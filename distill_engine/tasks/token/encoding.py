"""Words to model rows: word pieces with each word's tag on its first piece, long sentences as windows.

A sentence becomes `[CLS] pieces [SEP]` padded to `max_seq_length`. The label of a row position is
the word's tag id on the word's first piece and `IGNORE_LABEL` everywhere else ([CLS], [SEP],
padding, a word's later pieces), as Hugging Face's run_ner labels them: the loss and the metric see
each word once. With `label_all_tokens` the later pieces carry the word's tag too (B-X as I-X,
run_ner's rule), and the losses train on them; the metric still reads first pieces only.

A sentence of more pieces than a row holds (`max_seq_length - 2`) is cut into windows at word
boundaries, never truncated: consecutive words fill a row while they fit, and the next row goes
on with the next word. `EncodedDataset.example_index` maps each row to its sentence and
`word_ids` each position to its word, so evaluation puts every word's prediction back in its
sentence, each word predicted exactly once. A single word longer than a whole row (rare: a long
number or URL) keeps its first `max_seq_length - 2` pieces: its first piece, the one that carries
its tag and its prediction, is always in. A word the tokenizer turns into no piece at all (a
control character) is encoded as [UNK], so that it too gets a prediction.
"""

from __future__ import annotations

import numpy as np

from distill_engine.data.encoded import EncodedDataset
from distill_engine.errors import DataError
from distill_engine.tasks.token.schemes import inside_of

IGNORE_LABEL = -100  # a position the loss and the metric leave out (PyTorch's cross-entropy ignore_index)


def word_pieces(words: list[list[str]], tokenizer) -> dict[str, list[int]]:
    """Each distinct word's piece ids (one batch call to the tokenizer); an empty one becomes [UNK]."""
    unique = sorted({w for sentence in words for w in sentence})
    pieces = tokenizer.encode_pieces(unique)
    return {w: (list(p) or [tokenizer.unk_id]) for w, p in zip(unique, pieces)}


def windows(lengths: list[int], budget: int) -> list[tuple[int, int]]:
    """[start, stop) word ranges of consecutive words whose pieces (`lengths`, each cut to `budget`)
    fit in `budget`; every word in exactly one range, in order."""
    out, start, used = [], 0, 0
    for i, n in enumerate(lengths):
        n = min(n, budget)
        if used + n > budget and i > start:
            out.append((start, i))
            start, used = i, 0
        used += n
    out.append((start, len(lengths)))
    return out


def encode_words(examples, tokenizer, max_seq_length: int) -> EncodedDataset:
    """Encode `TokenExamples` into rows (see the module's docstring); labels when the examples have tags."""
    if max_seq_length < 3:
        raise DataError(f"max_seq_length {max_seq_length} is too small for a token task: [CLS], one piece and [SEP]")
    budget = max_seq_length - 2
    task = examples.task
    pieces_of = word_pieces(examples.words, tokenizer)
    labelled = examples.tags is not None
    all_tokens = labelled and task.label_all_tokens
    later = np.array([task.labels.index(inside_of(t)) if inside_of(t) in task.labels else i
                      for i, t in enumerate(task.labels)], np.int32) if all_tokens else None
    rows_ids, rows_words, rows_labels, rows_example = [], [], [], []
    for e, sentence in enumerate(examples.words):
        pieces = [pieces_of[w][:budget] for w in sentence]
        tags = examples.tags[e] if labelled else None
        for start, stop in windows([len(p) for p in pieces], budget):
            ids, word_ids, labels = [tokenizer.cls_id], [-1], [IGNORE_LABEL]
            for w in range(start, stop):
                ids.extend(pieces[w])
                word_ids.extend([w] * len(pieces[w]))
                if labelled:
                    tag = int(tags[w])
                    rest = int(later[tag]) if all_tokens else IGNORE_LABEL
                    labels.extend([tag] + [rest] * (len(pieces[w]) - 1))
            ids.append(tokenizer.sep_id)
            word_ids.append(-1)
            labels.append(IGNORE_LABEL)
            rows_ids.append(ids)
            rows_words.append(word_ids)
            rows_labels.append(labels)
            rows_example.append(e)
    n = len(rows_ids)
    input_ids = np.full((n, max_seq_length), tokenizer.pad_id, np.int32)
    attention = np.zeros((n, max_seq_length), np.int32)
    word_ids = np.full((n, max_seq_length), -1, np.int32)
    labels = np.full((n, max_seq_length), IGNORE_LABEL, np.int32) if labelled else None
    for r in range(n):
        k = len(rows_ids[r])
        input_ids[r, :k] = rows_ids[r]
        attention[r, :k] = 1
        word_ids[r, :k] = rows_words[r]
        if labelled:
            labels[r, :k] = rows_labels[r]
    return EncodedDataset(input_ids, np.zeros_like(input_ids), attention, labels=labels,
                          example_index=np.asarray(rows_example, np.int64), word_ids=word_ids)


def first_pieces(word_ids: np.ndarray) -> np.ndarray:
    """[N, L] bool: the positions where a word starts (its first piece)."""
    previous = np.concatenate([np.full((word_ids.shape[0], 1), -1, word_ids.dtype), word_ids[:, :-1]], axis=1)
    return (word_ids >= 0) & (word_ids != previous)


def word_predictions(outputs: np.ndarray, data: EncodedDataset, examples) -> list[np.ndarray]:
    """Each sentence's predicted tag id per word: the argmax of the head's outputs [N, L, C] at the
    word's first piece, from whichever row (window) holds it. A word predicted twice or never is an
    error (the encoding guarantees once)."""
    outputs = np.asarray(outputs)
    if outputs.ndim != 3 or outputs.shape[:2] != data.input_ids.shape:
        raise DataError(f"token logits must be [N, L, C] = [{len(data)}, {data.max_length}, C], got {outputs.shape}")
    if data.word_ids is None:
        raise DataError("the encoded rows carry no word_ids: they were not encoded by the token task type")
    predicted = [np.full(len(w), -1, np.int64) for w in examples.words]
    starts = first_pieces(data.word_ids)
    best = outputs.argmax(-1)
    for row, e in enumerate(data.examples_of_rows):
        at = np.flatnonzero(starts[row])
        words = data.word_ids[row, at]
        if np.any(predicted[e][words] >= 0):
            raise DataError(f"sentence {e}: a word is predicted by two rows")
        predicted[e][words] = best[row, at]
    missing = next((e for e, p in enumerate(predicted) if np.any(p < 0)), None)
    if missing is not None:
        raise DataError(f"sentence {missing}: words {np.flatnonzero(predicted[missing] < 0).tolist()} have no prediction")
    return predicted
