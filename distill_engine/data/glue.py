"""GLUE task definitions and a strict reader for GLUE's tab-separated files."""

from __future__ import annotations

import io
from pathlib import Path

import attrs
import numpy as np

from distill_engine.data.textfile import read_text
from distill_engine.errors import DataError, unknown_name


@attrs.frozen
class GlueTask:
    """One GLUE task: which columns hold the texts and label, the class names, and how it is scored."""

    name: str
    text_a: str | int
    text_b: str | int | None
    label: str | int | None
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    has_header: bool = True
    # For a header-less layout (CoLA train/dev): the name of each column, so that a split of
    # the same task that does carry a header (CoLA test: `index\tsentence`) can be read by name.
    columns: tuple[str, ...] | None = None

    @property
    def num_labels(self) -> int:
        """Number of classes, or 1 for a regression task."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        """True when labels are real-valued scores (STS-B)."""
        return self.labels is None


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask(
            "cola", 3, None, 1, _BINARY, ("mcc",), has_header=False,
            columns=("source", "label", "original_label", "sentence"),
        ),
        GlueTask("sst2", "sentence", None, "label", _BINARY, ("accuracy",)),
        GlueTask("mrpc", "#1 String", "#2 String", "Quality", _BINARY, ("accuracy", "f1")),
        GlueTask("qqp", "question1", "question2", "is_duplicate", _BINARY, ("accuracy", "f1")),
        GlueTask("stsb", "sentence1", "sentence2", "score", None, ("pearson", "spearman")),
        GlueTask(
            "mnli", "sentence1", "sentence2", "gold_label",
            ("contradiction", "entailment", "neutral"), ("accuracy",),
        ),
        GlueTask("qnli", "question", "sentence", "label", _NLI2, ("accuracy",)),
        GlueTask("rte", "sentence1", "sentence2", "label", _NLI2, ("accuracy",)),
        GlueTask("wnli", "sentence1", "sentence2", "label", _BINARY, ("accuracy",)),
    )
}

# TinyBERT and the GLUE leaderboard call the mismatched MNLI evaluation "mnli-mm"; it is the
# same task definition read from a different file.
_ALIASES = {"mnlimm": "mnli", "mnlim": "mnli"}


def get_task(name: str) -> GlueTask:
    """Look up a GLUE task by name, ignoring case, '-' and '_' (so "SST-2", "sst-2" and "sst2" all work)."""
    key = name.lower().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise DataError(unknown_name("GLUE task", name, TASKS))
    return TASKS[key]


@attrs.frozen(eq=False)
class GlueExamples:
    """Texts and labels read from one GLUE file; `labels` is None for an unlabelled (test) split."""

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.text_a)


def _resolve(header: list[str], column: str, path: Path) -> int:
    try:
        return header.index(column)
    except ValueError:
        raise DataError(
            f'{path}: missing column "{column}" in header (columns: {", ".join(header)})'
        ) from None


def read_glue_tsv(path, task: GlueTask) -> GlueExamples:
    """Read a GLUE .tsv (any split) for `task`: tab-separated, no quoting, optional UTF-8 BOM. Columns are found by header name (or by index for header-less files); a header without the label column is an unlabelled test split."""
    path = Path(path)
    text = read_text(path, "GLUE file", bom=True)
    # Reading lines ourselves (no csv quoting) keeps line numbers exact for error messages;
    # newline="" splits at \n, \r and \r\n only, as reading the file line by line does.
    lines = [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]
    if not lines or not lines[0].strip():
        raise DataError(f"{path}: empty file (expected a {task.name} GLUE file)")

    first = lines[0].split("\t")
    has_header = task.has_header
    if not has_header and task.columns is not None and task.columns[int(task.text_a)] in first:
        has_header = True
        names = task.columns
        text_a_col = names[int(task.text_a)]
        text_b_col = None if task.text_b is None else names[int(task.text_b)]
        label_col = None if task.label is None else names[int(task.label)]
    else:
        text_a_col, text_b_col, label_col = task.text_a, task.text_b, task.label

    if has_header:
        header = first
        ia = _resolve(header, str(text_a_col), path)
        ib = None if text_b_col is None else _resolve(header, str(text_b_col), path)
        il = header.index(label_col) if label_col in header else None
        start = 1
    else:
        ia = int(text_a_col)
        ib = None if text_b_col is None else int(text_b_col)
        il = None if label_col is None else int(label_col)
        start = 0

    needed = max(i for i in (ia, ib, il) if i is not None) + 1
    text_a: list[str] = []
    text_b: list[str] | None = None if ib is None else []
    raw_labels: list[tuple[int, str]] = []
    for lineno, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) < needed:
            raise DataError(
                f"{path}:{lineno}: row has {len(row)} columns, expected at least {needed} for {task.name}"
            )
        text_a.append(row[ia])
        if text_b is not None:
            text_b.append(row[ib])
        if il is not None:
            raw_labels.append((lineno, row[il].strip()))

    labels = None
    if il is not None:
        labels = _parse_labels(raw_labels, task, path)
    return GlueExamples(text_a=text_a, text_b=text_b, labels=labels)


def _parse_labels(raw: list[tuple[int, str]], task: GlueTask, path: Path) -> np.ndarray:
    if task.labels is None:
        out = np.empty(len(raw), dtype=np.float32)
        for i, (lineno, value) in enumerate(raw):
            try:
                score = float(value)
            except ValueError:
                score = float("nan")
            if not np.isfinite(score):
                raise DataError(f'{path}:{lineno}: label "{value}" is not a finite number ({task.name} is regression)')
            out[i] = score
        return out
    index = {name: i for i, name in enumerate(task.labels)}
    out = np.empty(len(raw), dtype=np.int32)
    for i, (lineno, value) in enumerate(raw):
        k = index.get(value)
        if k is None:
            raise DataError(
                f'{path}:{lineno}: label "{value}" is not a {task.name} label; allowed: {", ".join(task.labels)}'
            )
        out[i] = k
    return out
