"""TinyBERT's data augmentation of texts: candidates per eligible word, then N random draws.

For each text (`words.split_words`): every eligible word (`words.eligible`) gets candidates:
- a word that is a single WordPiece, when a masked LM is given (`mlm.MaskedLM`): its top-K
  masked-LM predictions (no "##" pieces) for the text with that piece masked;
- otherwise (several pieces, or no masked LM): its K nearest GloVe words by cosine similarity
  among the vectors read (`glove.WordVectors`);
- no candidates at all (a word GloVe lacks): the word itself, so it never changes.
Then N draws: in each, every eligible word is replaced by a uniformly chosen candidate with
probability p. A draw equal to the text or to an earlier draw is dropped, so a text yields at most
N new versions. The draws of text t of example i come from `numpy.random.default_rng([seed, i, t])`
alone: the same output for the same seed whatever the chunking, the backend or the machine
(candidates are computed deterministically, see `glove` and `mlm`).

Without a masked LM, GloVe serves every eligible word (the masked-LM checkpoint the paper uses,
BERT-base with its LM head, is not available offline here): a documented deviation, see the README.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from distill_engine.augment.glove import GLOVE_ROWS, WordVectors
from distill_engine.augment.words import Word, basic_splitter, cased_like, eligible, split_words
from distill_engine.errors import DataError

# TinyBERT's defaults (data_augmentation.py): M (K here) = 15 candidates, p = 0.4, N = 30 draws,
# with the per-task N of its task_distill instructions.
DEFAULT_K = 15
DEFAULT_P = 0.4
DEFAULT_N = 30
TASK_N = {"sst2": 20, "qnli": 20, "mnli": 10, "qqp": 10}


def default_n(task_name: str) -> int:
    """The paper's code's N for a task: SST-2 and QNLI 20, MNLI and QQP 10, every other task 30."""
    return TASK_N.get(task_name, DEFAULT_N)


@attrs.frozen
class AugmentSettings:
    """N draws per text, replacement probability p, K candidates per word, the seed, and how many
    GloVe rows are searched."""

    n: int
    p: float = DEFAULT_P
    k: int = DEFAULT_K
    seed: int = 42
    glove_rows: int = GLOVE_ROWS

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.n <= 10_000:
            raise DataError(f"--n {self.n}: draws per text must be 0..10000")
        if not 0.0 <= self.p <= 1.0:
            raise DataError(f"--p {self.p}: a probability must be 0..1")
        if not 1 <= self.k <= 10_000:
            raise DataError(f"--k {self.k}: candidates per word must be 1..10000")
        if not 0 <= self.seed <= 2**32 - 1:
            raise DataError(f"--seed {self.seed}: must be 0..2^32-1")
        if self.glove_rows < 2:
            raise DataError(f"--glove-rows {self.glove_rows}: need 2 rows at least (a word and a neighbour)")


@attrs.define
class Counts:
    """What a run of the augmenter did, summed over texts."""

    texts: int = 0
    eligible_words: int = 0
    mlm_words: int = 0
    glove_words: int = 0
    words_without_candidates: int = 0
    new_texts: int = 0
    repeated_draws: int = 0

    def add(self, other: Counts) -> None:
        for field in attrs.fields(Counts):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


class Augmenter:
    """Augments batches of texts (see the module docstring). `mlm`: a `mlm.MaskedLM` or None."""

    def __init__(self, vectors: WordVectors, settings: AugmentSettings, mlm=None):
        self.vectors = vectors
        self.settings = settings
        self.mlm = mlm
        self._splitter = mlm.tokenizer.library_tokenizer if mlm is not None else basic_splitter()
        self._neighbours: dict[str, list[str]] = {}  # GloVe neighbours, memoised across calls

    def _glove(self, words: set[str]) -> None:
        todo = [w for w in words if w not in self._neighbours]
        if todo:
            self._neighbours.update(self.vectors.neighbours(sorted(todo), self.settings.k))

    def candidates(self, texts: Sequence[str]) -> tuple[list[list[tuple[Word, list[str]]]], Counts]:
        """Per text, its eligible words with their candidates (the word itself when it has none)."""
        from distill_engine.augment.mlm import MaskQuery

        counts = Counts(texts=len(texts))
        split = split_words(self._splitter, list(texts))
        per_text: list[list[tuple[Word, list[str] | None]]] = []
        queries, slots, glove_words = [], [], set()
        for t, (words, pieces) in enumerate(split):
            chosen = []
            for word in words:
                if not eligible(word.normalized):
                    continue
                if self.mlm is not None and len(word.piece_ids) == 1:
                    queries.append(MaskQuery(tuple(pieces), word.first_piece))
                    slots.append((t, len(chosen)))
                    counts.mlm_words += 1
                else:
                    glove_words.add(word.normalized)
                    counts.glove_words += 1
                chosen.append((word, None))
            per_text.append(chosen)
            counts.eligible_words += len(chosen)
        self._glove(glove_words)
        if queries:
            for (t, j), cands in zip(slots, self.mlm.candidates(queries, self.settings.k)):
                per_text[t][j] = (per_text[t][j][0], cands)
        out = []
        for chosen in per_text:
            done = []
            for word, cands in chosen:
                if cands is None:
                    cands = self._neighbours.get(word.normalized, [])
                if not cands:
                    counts.words_without_candidates += 1
                    cands = [word.normalized]
                done.append((word, cands))
            out.append(done)
        return out, counts

    def draws(self, text: str, words: list[tuple[Word, list[str]]], example: int, text_index: int
              ) -> tuple[list[str], int]:
        """The distinct new versions of `text` (at most N, none equal to it), and how many draws
        repeated the text or an earlier draw."""
        s = self.settings
        if not words or s.n == 0:
            return [], 0
        rng = np.random.default_rng([s.seed, example, text_index])
        replace = rng.random((s.n, len(words))) < s.p
        picks = rng.random((s.n, len(words)))
        seen = {text}
        out, repeated = [], 0
        for d in range(s.n):
            parts, last = [], 0
            for j, (word, cands) in enumerate(words):
                if not replace[d, j]:
                    continue
                choice = cands[min(int(picks[d, j] * len(cands)), len(cands) - 1)]
                if choice == word.normalized:
                    continue
                parts.append(text[last:word.start])
                parts.append(cased_like(text[word.start:word.end], choice))
                last = word.end
            new = "".join(parts) + text[last:] if parts else text
            if new in seen:
                repeated += 1
                continue
            seen.add(new)
            out.append(new)
        return out, repeated

    def augment(self, texts: Sequence[str], examples: Sequence[int], text_indices: Sequence[int]
                ) -> tuple[list[list[str]], Counts]:
        """New versions of each text; `examples[i]`, `text_indices[i]` seed text i's draws."""
        cands, counts = self.candidates(texts)
        out = []
        for text, words, example, t in zip(texts, cands, examples, text_indices):
            new, repeated = self.draws(text, words, example, t)
            counts.new_texts += len(new)
            counts.repeated_draws += repeated
            out.append(new)
        return out, counts
