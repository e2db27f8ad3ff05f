"""Reading tagged sentences: CoNLL column files and JSON Lines, strictly.

CoNLL (the CoNLL-2003 files): one word a line, its columns split on whitespace or tabs, the word in
the first column and its tag in column `tag_column` (0-based; negative counts from the end, the last
by default); a blank line between sentences; `-DOCSTART-` lines (document boundaries) skipped. A file
of one column holds words without tags (unlabelled). JSON Lines: one sentence a line,
`{"tokens": [...], "tags": [...]}`; without "tags", unlabelled.

Every problem is one `DataError` naming file:line: a tag outside the task's set, a line with another
number of columns than the file's first, a tag the scheme forbids where it stands, an empty file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np

from distill_engine.data.textfile import json_lines, read_text
from distill_engine.errors import DataError
from distill_engine.tasks.token.schemes import malformed, problem, sort_labels

DOCSTART = "-DOCSTART-"


@attrs.frozen(eq=False)
class TokenExamples:
    """Sentences of a token task: each one's words, their tags (ids into `task.labels`; None for an
    unlabelled file) and the line each word came from (1-based; for messages and predictions)."""

    task: Any  # the TokenTask they were read for (encoding reads its label_all_tokens)
    words: list[list[str]]
    tags: list[np.ndarray] | None
    lines: list[list[int]]

    @property
    def labels(self) -> list[np.ndarray] | None:
        return self.tags

    def __len__(self) -> int:
        return len(self.words)

    def head(self, n: int) -> TokenExamples:
        """The first `n` sentences (run.max_examples cuts the dev split with it)."""
        return TokenExamples(self.task, self.words[:n], None if self.tags is None else self.tags[:n], self.lines[:n])


def _sentences_conll(path: Path, tag_column: int):
    """(words, tags or None, lines) of each sentence, columns checked; `tags` None when the file has one column."""
    # split on "\n" only: str.splitlines() would also cut at \x1c or \u2028 inside a word, and
    # the line numbers in messages would no longer be the editor's
    text = read_text(path, "data file")
    columns = None
    words, tags, lines = [], [], []
    out = []
    for number, raw in enumerate(text.split("\n"), 1):
        fields = raw.split()
        if not fields or fields[0] == DOCSTART:
            if words:
                out.append((words, tags if columns > 1 else None, lines))
            words, tags, lines = [], [], []
            continue
        if columns is None:
            columns = len(fields)
            if columns > 1 and not -columns <= tag_column < columns:
                raise DataError(f"{path}:{number}: tag_column {tag_column} is out of range: the line has "
                                f"{columns} columns")
        elif len(fields) != columns:
            raise DataError(f"{path}:{number}: {len(fields)} columns, and the file's first word line has {columns}")
        words.append(fields[0])
        tags.append(fields[tag_column] if columns > 1 else None)
        lines.append(number)
    if words:
        out.append((words, tags if columns > 1 else None, lines))
    return out


def _sentences_jsonl(path: Path):
    out = []
    for number, record in json_lines(path, read_text(path, "data file")):
        if not isinstance(record, dict) or "tokens" not in record:
            raise DataError(f'{path}:{number}: expected a record {{"tokens": [...], "tags": [...]}}')
        words, tags = record["tokens"], record.get("tags")
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise DataError(f'{path}:{number}: "tokens" must be a non-empty list of non-empty strings')
        if tags is not None:
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise DataError(f'{path}:{number}: "tags" must be a list of strings')
            if len(tags) != len(words):
                raise DataError(f'{path}:{number}: {len(tags)} tags for {len(words)} tokens')
        out.append((words, tags, [number] * len(words)))
    if out and len({s[1] is None for s in out}) > 1:
        first = next(s for s in out if (s[1] is None) != (out[0][1] is None))
        raise DataError(f'{path}:{first[2][0]}: some lines have "tags" and others not')
    return out


def sentences(path: Path, task) -> list[tuple[list[str], list[str] | None, list[int]]]:
    """The file's sentences as strings: (words, tags or None, line of each word)."""
    path = Path(path)
    found = _sentences_jsonl(path) if task.format == "jsonl" else _sentences_conll(path, task.tag_column)
    if not found:
        raise DataError(f"{path}: empty file (no sentences)")
    return found


def _check_tags(path: Path, words_tags_lines, task, known: dict | None) -> None:
    _, tags, lines = words_tags_lines
    for tag, line in zip(tags, lines):
        why = malformed(tag, task.scheme)
        if why:
            raise DataError(f"{path}:{line}: {why}")
        if known is not None and tag not in known:
            raise DataError(f"{path}:{line}: tag {tag!r} is not one of task {task.name}'s ({', '.join(known)})")
    found = problem(tags, task.scheme)
    if found:
        raise DataError(f"{path}:{lines[found[0]]}: {found[1]}")


def read_token_examples(path: Path, task) -> TokenExamples:
    """Read one split of a token task (tags checked against `task.labels` and its scheme)."""
    path = Path(path)
    found = sentences(path, task)
    labelled = found[0][1] is not None
    index = {label: i for i, label in enumerate(task.labels)}
    if labelled:
        for sentence in found:
            _check_tags(path, sentence, task, index)
    return TokenExamples(task, [s[0] for s in found],
                         [np.array([index[t] for t in s[1]], np.int32) for s in found] if labelled else None,
                         [s[2] for s in found])


def collect_labels(path: Path, task) -> tuple[str, ...]:
    """The tags of a (training) file, checked against the scheme, in `sort_labels` order."""
    path = Path(path)
    found = sentences(path, task)
    if found[0][1] is None:
        raise DataError(f"{path}: no tags to collect the task's labels from (set data.task.labels)")
    seen = set()
    for sentence in found:
        _check_tags(path, sentence, task, None)
        seen.update(sentence[1])
    return sort_labels(seen)
