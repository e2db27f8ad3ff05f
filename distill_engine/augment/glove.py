"""Word vectors in the GloVe text format, and nearest neighbours by cosine similarity.

TinyBERT reads the first 100,000 rows of GloVe (the most frequent words), normalises every vector
and, per word, takes the K rows of highest cosine similarity other than the word itself (one
`np.dot` over the whole matrix and a full argsort per word occurrence). Here the neighbours of many
words come from one normalised matrix product per block of words, a partial sort, and a float64
re-scoring of the shortlist, ordered by similarity with ties to the lower row: the same words on
every machine (a float32 product's last bits differ between BLAS kernels; the float64 re-scoring
makes a near-tie decide alike everywhere).
"""

from __future__ import annotations

import gzip
import io
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from distill_engine.errors import DataError

GLOVE_ROWS = 100_000  # TinyBERT's vocab_size for the embedding retrieval
_BLOCK = 256  # query words per matrix product: [256, 100k] float32 scores are 100 MB
_SHORTLIST_EXTRA = 16  # rows beyond K re-scored in float64
_TIE_SLACK = 1e-5  # float32 rounding of a cosine is below this: a row within it of the edge is re-scored too


def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _parse_line(path: Path, lineno: int, line: str, dim: int | None) -> tuple[str, list[str]]:
    fields = line.rstrip("\n").rstrip(" ").split(" ")
    if dim is None:
        dim = len(fields) - 1
        if dim < 1:
            raise DataError(f"{path}:{lineno}: expected a word and its vector (GloVe text format: "
                            "word v1 ... vd, space-separated)")
    if len(fields) < dim + 1:
        raise DataError(f"{path}:{lineno}: {len(fields) - 1} values, expected {dim} (the first row's dimension)")
    # glove.840B has a few words holding spaces: the vector is the last `dim` fields
    return " ".join(fields[: len(fields) - dim]), fields[len(fields) - dim:]


def check_vectors_file(path) -> int:
    """Check the first row of a GloVe file cheaply (a recipe's preflight); its dimension."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: word-vector file not found")
    try:
        with _open_text(path) as f:
            line = f.readline()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the word-vector file ({exc})") from None
    if not line.strip():
        raise DataError(f"{path}: empty word-vector file")
    _, values = _parse_line(path, 1, line, None)
    try:
        np.asarray(values, dtype=np.float32)
    except ValueError:
        raise DataError(f"{path}:1: not a word vector (GloVe text format: word v1 ... vd)") from None
    return len(values)


class WordVectors:
    """The first `rows` vectors of a GloVe text file (plain or .gz), normalised to unit length."""

    def __init__(self, words: list[str], vectors: np.ndarray, source: str = "vectors"):
        self.words = list(words)
        self.source = source
        self.index: dict[str, int] = {}
        for i, w in enumerate(self.words):
            self.index.setdefault(w, i)  # a repeated word: its first row, as a dict built in order keeps
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
        unit = np.divide(vectors, norms, out=np.zeros(vectors.shape, np.float64), where=norms > 0)
        self.unit64 = unit
        self.unit = unit.astype(np.float32)

    @classmethod
    def load(cls, path, rows: int = GLOVE_ROWS) -> WordVectors:
        """Read a GloVe text file; every malformed row is one DataError naming file and line."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: word-vector file not found")
        if rows < 1:
            raise DataError(f"rows must be at least 1, got {rows}")
        lines: list[str] = []
        try:
            with _open_text(path) as f:
                for line in f:
                    if len(lines) >= rows:
                        break
                    if line.strip():
                        lines.append(line)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason}); expected GloVe's text format") from None
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: cannot read the word-vector file ({exc})") from None
        if not lines:
            raise DataError(f"{path}: empty word-vector file")
        dim = len(_parse_line(path, 1, lines[0], None)[1])
        # fast path: every row "word v1 ... vd" with a one-token word, parsed by numpy in one call
        heads, _, tails = zip(*(line.partition(" ") for line in lines))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            flat = np.fromstring("".join(t if t.endswith("\n") else t + "\n" for t in tails), dtype=np.float32,
                                 sep=" ")
        if flat.size == len(lines) * dim:
            words, matrix = list(heads), flat.reshape(len(lines), dim)
        else:  # a row of another width, a word holding spaces (glove.840B) or a value that is not a number
            words, values = [], []
            for lineno, line in enumerate(lines, start=1):
                word, vec = _parse_line(path, lineno, line, dim)
                words.append(word)
                values.append(vec)
            try:
                matrix = np.asarray(values, dtype=np.float32)
            except ValueError:
                bad = next(i for i, v in enumerate(values) if not _numbers(v))
                raise DataError(f"{path}: row {bad + 1} ({words[bad]!r}) holds a value that is not a number") from None
        if not np.isfinite(matrix).all():
            bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
            raise DataError(f"{path}: row {bad + 1} ({words[bad]!r}) holds nan or inf")
        return cls(words, matrix, str(path))

    def __len__(self) -> int:
        return len(self.words)

    def nearest_rows(self, rows: np.ndarray, k: int) -> np.ndarray:
        """[len(rows), min(k, n-1)] row indices: per query row, the rows of highest cosine similarity,
        itself excluded, in descending similarity (ties: the lower row first)."""
        rows = np.asarray(rows, dtype=np.int64)
        n = len(self.words)
        k = min(k, n - 1)
        out = np.zeros((len(rows), max(k, 0)), dtype=np.int64)
        if k <= 0 or not len(rows):
            return out
        m = min(n - 1, k + _SHORTLIST_EXTRA)
        for b in range(0, len(rows), _BLOCK):
            q = rows[b: b + _BLOCK]
            scores = self.unit[q] @ self.unit.T  # [block, n] float32
            scores[np.arange(len(q)), q] = -np.inf
            # the shortlist: every row within float32 noise of the m-th best (all of a tie at the edge)
            edge = np.partition(scores, n - m, axis=1)[:, n - m]  # the m-th largest of each row
            for r in range(len(q)):
                short = np.flatnonzero(scores[r] >= edge[r] - _TIE_SLACK)
                short = short[short != q[r]]
                exact = self.unit64[short] @ self.unit64[q[r]]
                out[b + r] = short[np.lexsort((short, -exact))[:k]]  # by similarity, then by row
        return out

    def neighbours(self, words: Iterable[str], k: int) -> dict[str, list[str]]:
        """The K nearest words of each word (none for a word not among the vectors)."""
        words = list(dict.fromkeys(words))
        known = [w for w in words if w in self.index]
        rows = self.nearest_rows(np.array([self.index[w] for w in known], dtype=np.int64), k)
        out = {w: [] for w in words}
        for w, r in zip(known, rows):
            out[w] = [self.words[i] for i in r]
        return out


def _numbers(values: list[str]) -> bool:
    try:
        np.asarray(values, dtype=np.float32)
        return True
    except ValueError:
        return False
