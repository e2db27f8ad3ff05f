"""Task definitions (which columns hold the texts and the label, the classes, the metrics) and
strict readers and writers for task files in TSV, CSV and JSON Lines.

A `Task` is what a recipe's `data.task` declares, either by a preset's name ("sst2", "mnli", ...:
the nine GLUE tasks, `TASKS`) or as a table of its own:

    [data.task]
    name = "reviews"
    format = "csv"          # "tsv" (GLUE's: tab-separated, no quoting), "csv" (quoted fields), "jsonl"
    text_a = "review"       # a column name (files with a header), or a 0-based index (without)
    text_b = "summary"      # optional: sentence-pair tasks
    label = "verdict"
    labels = ["bad", "good"]  # omitted: a regression task (real-valued labels)
    metrics = ["accuracy", "f1"]

Reading keeps each record as the file holds it (`TaskTable.records`), so that data augmentation
can write the same file back with other texts in it (`write_task_file`); `TaskTable.examples()`
gives the texts and parsed labels training reads. Every problem is one `DataError` naming the file
and, for a row, its line: a column the task expects and the file lacks (with the columns it has),
a label outside the task's set, a row with too few columns, a JSON line that is not a record.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from distill_engine.data.textfile import read_text
from distill_engine.errors import DataError, FieldError, unknown_name

FORMATS = ("tsv", "csv", "jsonl")
# The built-in metrics a sequence task may name (registered by distill_engine.tasks.builtin; a metric
# plugin's of the same kind is accepted too, through the registry); f1 is binary, with the second
# label as the positive class.
CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")
TASK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

Column = str | int


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _column(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None and attribute.name == "text_b":
        return
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FieldError(attribute.name, f"{_show(value)} is not a column: give a column name (a string) "
                                         "or a 0-based column index")
    if isinstance(value, int) and value < 0:
        raise FieldError(attribute.name, f"{value} is not a column index (0 is the first column)")
    if isinstance(value, str) and not value:
        raise FieldError(attribute.name, "is empty: give the column's name or its 0-based index")


def _name(_instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not TASK_NAME.fullmatch(value):
        raise FieldError(attribute.name, f"{_show(value)} is not a valid task name: 1-64 letters, digits, "
                                         '"_", "." or "-" (not first)')


def _labels(_instance: Any, attribute: attrs.Attribute, value: tuple) -> None:
    if not value:
        return  # regression
    if len(value) < 2:
        raise FieldError(attribute.name, f"{list(value)} has one class; a classification task needs two at least "
                                         "(omit labels for a regression task)")
    for i, label in enumerate(value):
        if not isinstance(label, str) or not label.strip():
            raise FieldError(f"{attribute.name}[{i}]", f"{_show(label)} is not a label: labels are non-empty strings "
                                                       'as the file writes them (e.g. "0", "positive")')
    seen = set()
    for i, label in enumerate(value):
        if label in seen:
            raise FieldError(f"{attribute.name}[{i}]", f"{_show(label)} appears twice")
        seen.add(label)


def _default_metrics(task: Task) -> tuple[str, ...]:
    return REGRESSION_METRICS if not task.labels else ("accuracy",)


def _to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@attrs.frozen
class Task:
    """One task: where its texts and label are in a file, its classes, and how it is scored.

    `labels` empty means regression (real-valued labels, one output). Columns are names in a
    file with a header (JSON Lines: the keys of object rows), 0-based indices otherwise (JSON
    Lines: array rows). `metrics[0]` ranks checkpoints (keep_best)."""

    name: str = attrs.field(validator=_name)
    text_a: Column = attrs.field(validator=_column)
    text_b: Column | None = attrs.field(default=None, validator=_column)
    label: Column = attrs.field(default="label", validator=_column)
    labels: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple, validator=_labels)
    metrics: tuple[str, ...] = attrs.field(default=attrs.Factory(_default_metrics, takes_self=True),
                                           converter=_to_tuple)
    format: str = attrs.field(default="tsv")
    header: bool = True
    # For a header-less layout (CoLA train/dev): the name of each column, so that a split of the
    # same task that does carry a header (CoLA test: `index\tsentence`) can be read by name.
    columns: tuple[str, ...] | None = attrs.field(default=None, converter=_to_tuple)

    def __attrs_post_init__(self) -> None:
        if self.format not in FORMATS:
            raise FieldError("format", f"{_show(self.format)} is not one of {', '.join(FORMATS)}")
        builtin = REGRESSION_METRICS if self.is_regression else CLASSIFICATION_METRICS
        if not self.metrics:
            raise FieldError("metrics", "is empty: name one metric at least (the first ranks checkpoints)")
        if any(metric not in builtin for metric in self.metrics):
            # a metric plugin's name, or a mistake: the registry decides (the presets never get here,
            # so importing this module loads no plugin)
            from distill_engine.tasks.metrics import check_metrics

            check_metrics(self.metrics, "regression" if self.is_regression else "classification",
                          "a regression task" if self.is_regression else "a classification task",
                          hint=lambda m: " (pearson and spearman need a regression task: omit labels)"
                          if m in REGRESSION_METRICS else "")
        for i, metric in enumerate(self.metrics):
            if metric == "f1" and len(self.labels) != 2:
                raise FieldError(f"metrics[{i}]", f'"f1" is binary F1 (second label positive); this task has '
                                                  f"{len(self.labels)} labels: use accuracy or mcc")
        cols = [("text_a", self.text_a), ("text_b", self.text_b), ("label", self.label)]
        given = [(field, col) for field, col in cols if col is not None]
        for i, (field, col) in enumerate(given):
            for other, col2 in given[:i]:
                if col == col2:
                    raise FieldError(field, f"{_show(col)} is also {other}: each column holds one thing")
            if not self.header and isinstance(col, str) and self.columns is None and self.format != "jsonl":
                raise FieldError(field, f"{_show(col)} is a column name, but header = false: without a header "
                                        "columns are 0-based indices")

    @property
    def num_labels(self) -> int:
        """Number of classes, or 1 for a regression task."""
        return 1 if self.is_regression else len(self.labels)

    @property
    def is_regression(self) -> bool:
        """True when labels are real-valued scores (STS-B)."""
        return not self.labels

    @property
    def is_pair(self) -> bool:
        """True for a sentence-pair task (text_b given)."""
        return self.text_b is not None

    @property
    def text_columns(self) -> tuple[Column, ...]:
        """The columns holding texts: (text_a,) or (text_a, text_b)."""
        return (self.text_a,) if self.text_b is None else (self.text_a, self.text_b)

    def describe(self) -> dict[str, Any]:
        """The definition as a recipe's [data.task] table writes it."""
        out = {"name": self.name, "format": self.format, "text_a": self.text_a}
        if self.text_b is not None:
            out["text_b"] = self.text_b
        out["label"] = self.label
        if self.labels:
            out["labels"] = list(self.labels)
        out["metrics"] = list(self.metrics)
        if not self.header:
            out["header"] = False
        return out


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

# The nine GLUE tasks, as presets of the same definition a recipe may write itself.
TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("cola", 3, None, 1, _BINARY, ("mcc",), header=False,
             columns=("source", "label", "original_label", "sentence")),
        Task("sst2", "sentence", None, "label", _BINARY, ("accuracy",)),
        Task("mrpc", "#1 String", "#2 String", "Quality", _BINARY, ("accuracy", "f1")),
        Task("qqp", "question1", "question2", "is_duplicate", _BINARY, ("accuracy", "f1")),
        Task("stsb", "sentence1", "sentence2", "score", (), ("pearson", "spearman")),
        Task("mnli", "sentence1", "sentence2", "gold_label",
             ("contradiction", "entailment", "neutral"), ("accuracy",)),
        Task("qnli", "question", "sentence", "label", _NLI2, ("accuracy",)),
        Task("rte", "sentence1", "sentence2", "label", _NLI2, ("accuracy",)),
        Task("wnli", "sentence1", "sentence2", "label", _BINARY, ("accuracy",)),
    )
}

# TinyBERT and the GLUE leaderboard call the mismatched MNLI evaluation "mnli-mm"; it is the
# same task definition read from a different file.
_ALIASES = {"mnlimm": "mnli", "mnlim": "mnli"}


def find_preset(name: str) -> Task | None:
    """The GLUE preset `name` means, ignoring case, '-' and '_' ("SST-2", "sst-2" and "sst2"), or None."""
    key = name.lower().replace("-", "").replace("_", "")
    return TASKS.get(_ALIASES.get(key, key))


def get_task(name: str) -> Task:
    """The preset called `name`, of any registered task type (`distill_engine.tasks.registry.find_task`)."""
    from distill_engine.tasks.registry import find_task

    return find_task(name)


def resolve_task(value: str | Task | None) -> Task | None:
    """A recipe's data.task: a preset's name, a definition, or nothing ("" or None: no task)."""
    from distill_engine.tasks.registry import resolve_task as resolve

    return resolve(value)


@attrs.frozen(eq=False)
class TaskExamples:
    """Texts and labels read from one task file; `labels` is None for an unlabelled (test) split."""

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.text_a)

    def head(self, n: int) -> TaskExamples:
        """The first `n` examples (run.max_examples cuts the dev split with it)."""
        return TaskExamples(self.text_a[:n], None if self.text_b is None else self.text_b[:n],
                            None if self.labels is None else self.labels[:n])


@attrs.frozen(eq=False)
class TaskTable:
    """One task file as read: its header (None without one), its records as the file holds them
    (lists of strings for TSV and CSV; dicts or lists for JSON Lines) with the line each starts on,
    and where the task's columns are in them (`keys`: index or key of text_a, text_b, label; the
    label's is None when the file has no label column, an unlabelled split)."""

    path: Path
    task: Task
    header: list[str] | None
    records: list[Any]
    lines: list[int]
    keys: tuple[Any, Any, Any]

    def __len__(self) -> int:
        return len(self.records)

    def texts(self, record: Any) -> tuple[str, ...]:
        """The texts (text_a[, text_b]) of one record."""
        ka, kb, _ = self.keys
        return (record[ka],) if kb is None else (record[ka], record[kb])

    def with_texts(self, record: Any, texts: tuple[str, ...]) -> Any:
        """A copy of `record` holding `texts` in place of its own (every other field kept)."""
        out = dict(record) if isinstance(record, dict) else list(record)
        for key, text in zip(self.keys[:2], texts):
            out[key] = text
        return out

    def examples(self) -> TaskExamples:
        """The texts and the parsed labels (class ids, or float32 scores for regression)."""
        ka, kb, kl = self.keys
        text_a = [r[ka] for r in self.records]
        text_b = None if kb is None else [r[kb] for r in self.records]
        labels = None
        if kl is not None:
            labels = _parse_labels([(line, r[kl]) for line, r in zip(self.lines, self.records)], self.task, self.path)
        return TaskExamples(text_a, text_b, labels)


def read_task_file(path, task: Task) -> TaskTable:
    """Read a task file (any split) in `task.format`; a header without the label column (or JSON
    Lines records without its key) is an unlabelled test split."""
    path = Path(path)
    text = read_text(path, f"{task.format.upper()} task file", bom=True)
    if not text.strip():
        raise DataError(f"{path}: empty file (expected a {task.format.upper()} file of task {task.name})")
    reader = {"tsv": _read_tsv, "csv": _read_csv, "jsonl": _read_jsonl}[task.format]
    try:
        return reader(path, text, task)
    except DataError as exc:
        other = _looks_like(text)
        if other is None or other == task.format:
            raise
        reads = f"task {task.name} reads {FORMATS[task.format]}"
        said = str(exc) if reads in str(exc) else f"{exc}; {reads}"
        raise DataError(f"{said}; the file looks like {FORMATS[other]}: read it with a task of format "
                        f"\"{other}\", or convert it") from None


# What each format is, for the messages of a file read in the wrong one.
FORMATS = {"tsv": "TSV (tab-separated, no quoting)", "csv": "CSV (comma-separated, fields quoted with \")",
           "jsonl": "JSON Lines (one object or array per line)"}


def _looks_like(text: str) -> str | None:
    """The format the first lines of a file look like ("tsv", "csv", "jsonl"), or None when they
    do not say: tabs in every line, else commas in every line, else a JSON value on each."""
    lines = [line for line in text.splitlines()[:20] if line.strip()][:5]
    if not lines:
        return None
    if all(line.lstrip().startswith(("{", "[")) for line in lines):
        return "jsonl"
    if all("\t" in line for line in lines):
        return "tsv"
    if all("," in line for line in lines) and not any("\t" in line for line in lines):
        return "csv"
    return None


def read_task_examples(path, task: Task) -> TaskExamples:
    """`read_task_file(path, task).examples()`."""
    return read_task_file(path, task).examples()


def _expected(task: Task) -> str:
    parts = [f"text_a {_show(task.text_a)}"]
    if task.text_b is not None:
        parts.append(f"text_b {_show(task.text_b)}")
    parts.append(f"label {_show(task.label)}")
    return ", ".join(parts)


def _missing(path: Path, task: Task, column: Any, has: list) -> DataError:
    shown = ", ".join(_show(c) for c in has) or "none"
    return DataError(f'{path}: no column {_show(column)}, which task {task.name} expects ({_expected(task)}); '
                     f"the file has columns: {shown}")


def _delimited_keys(path: Path, task: Task, first: list[str]) -> tuple[tuple, list[str] | None, int]:
    """(keys, header, records to skip) of a TSV or CSV file whose first record is `first`."""
    text_a, text_b, label = task.text_a, task.text_b, task.label
    has_header = task.header
    if not has_header and task.columns is not None and task.columns[int(text_a)] in first:
        # CoLA: header-less train/dev, a header on test
        has_header = True
        text_a = task.columns[int(text_a)]
        text_b = None if text_b is None else task.columns[int(text_b)]
        label = task.columns[int(label)]
    if not has_header:
        return (text_a, text_b, label), None, 0
    header = first

    def find(column: Any, required: bool = True) -> int | None:
        if isinstance(column, int):
            return column
        if column in header:
            return header.index(column)
        if required:
            raise _missing(path, task, column, header)
        return None

    keys = (find(text_a), None if text_b is None else find(text_b), find(label, required=False))
    return keys, header, 1


def _check_width(path: Path, task: Task, line: int, record: list[str], keys: tuple) -> None:
    needed = max(k for k in keys if k is not None) + 1
    if len(record) < needed:
        raise DataError(f"{path}:{line}: row has {len(record)} columns, expected at least {needed} "
                        f"for task {task.name} ({_expected(task)})")


def _delimited(path: Path, task: Task, rows: list[tuple[int, list[str]]]) -> TaskTable:
    rows = [(line, r) for line, r in rows if any(field.strip() for field in r)]
    if not rows:
        raise DataError(f"{path}: empty file (expected a {task.format.upper()} file of task {task.name})")
    keys, header, skip = _delimited_keys(path, task, rows[0][1])
    body = rows[skip:]
    label_key = keys[2]
    for line, record in body:
        _check_width(path, task, line, record, tuple(k for k in keys[:2] if k is not None))
    if label_key is not None:
        # a header-less file (or an index) names the label by position: a row without it is short
        for line, record in body:
            if len(record) <= label_key:
                raise DataError(f"{path}:{line}: row has {len(record)} columns, expected at least {label_key + 1} "
                                f"for task {task.name} (label {_show(task.label)})")
    return TaskTable(path, task, header, [r for _, r in body], [line for line, _ in body], keys)


def _read_tsv(path: Path, text: str, task: Task) -> TaskTable:
    # GLUE's files: tab-separated, no quoting (quote characters are text: csv.QUOTE_NONE in the
    # GLUE loaders). Reading lines ourselves keeps line numbers exact; newline="" splits at \n, \r
    # and \r\n only, as reading the file line by line does.
    lines = [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]
    return _delimited(path, task, [(i, line.split("\t")) for i, line in enumerate(lines, start=1)])


def _read_csv(path: Path, text: str, task: Task) -> TaskTable:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows = []
    start = 1
    try:
        for record in reader:
            rows.append((start, record))
            start = reader.line_num + 1  # a quoted field may span lines: the next record starts after
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc}); task {task.name} reads {FORMATS['csv']}") from None
    return _delimited(path, task, rows)


def _read_jsonl(path: Path, text: str, task: Task) -> TaskTable:
    records, lines = [], []
    for i, line in enumerate(io.StringIO(text, newline=""), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{i}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, (dict, list)):
            raise DataError(f"{path}:{i}: a JSON Lines task file holds one object (or array) per line, "
                            f"not {type(record).__name__}")
        records.append(record)
        lines.append(i)
    if not records:
        raise DataError(f"{path}: empty file (expected a JSONL file of task {task.name})")
    keys = (task.text_a, task.text_b, task.label)
    labelled = None
    for line, record in zip(lines, records):
        for field, key in (("text_a", keys[0]), ("text_b", keys[1])):
            if key is None:
                continue
            value = _jsonl_get(path, task, line, record, key)
            if not isinstance(value, str):
                raise DataError(f"{path}:{line}: {field} {_show(key)} is {_show(value)}, expected a string")
        has_label = _jsonl_has(record, keys[2])
        if labelled is None:
            labelled = has_label
        elif has_label != labelled:
            raise DataError(f"{path}:{line}: record {'has' if has_label else 'lacks'} the label "
                            f"{_show(keys[2])}, and the file's first record {'lacks' if has_label else 'has'} it")
    keys = (keys[0], keys[1], keys[2] if labelled else None)
    return TaskTable(path, task, None, records, lines, keys)


def _label_text(value: Any) -> Any:
    """A class label as the file's text: a JSON number 1 is the label "1", true is "true"."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return value  # a float (regression) stays a number; anything else fails when parsed


def _jsonl_has(record: Any, key: Any) -> bool:
    if isinstance(record, dict):
        return isinstance(key, str) and key in record
    return isinstance(key, int) and key < len(record)


def _jsonl_get(path: Path, task: Task, line: int, record: Any, key: Any) -> Any:
    if isinstance(record, dict):
        if isinstance(key, int):
            raise DataError(f"{path}:{line}: an object record, but task {task.name} gives column {key} by index "
                            "(object records are read by key: give the key's name)")
        if key not in record:
            raise DataError(f"{path}:{line}: no key {_show(key)}, which task {task.name} expects "
                            f"({_expected(task)}); the record has keys: {', '.join(_show(k) for k in record) or 'none'}")
        return record[key]
    if isinstance(key, str):
        raise DataError(f"{path}:{line}: an array record, but task {task.name} names column {_show(key)} "
                        "(array records are read by 0-based index)")
    if key >= len(record):
        raise DataError(f"{path}:{line}: record has {len(record)} values, expected at least {key + 1} "
                        f"for task {task.name} ({_expected(task)})")
    return record[key]


def _parse_labels(raw: list[tuple[int, Any]], task: Task, path: Path) -> np.ndarray:
    if task.is_regression:
        out = np.empty(len(raw), dtype=np.float32)
        for i, (line, value) in enumerate(raw):
            try:
                score = float(value) if not isinstance(value, bool) else math.nan
            except (TypeError, ValueError):
                score = math.nan
            if not math.isfinite(score):
                raise DataError(f"{path}:{line}: label {_show(value)} is not a finite number "
                                f"({task.name} is a regression task)")
            out[i] = score
        return out
    index = {name: i for i, name in enumerate(task.labels)}
    out = np.empty(len(raw), dtype=np.int32)
    for i, (line, value) in enumerate(raw):
        text = _label_text(value)
        k = index.get(text.strip() if isinstance(text, str) else text)
        if k is None:
            raise DataError(f"{path}:{line}: label {_show(value)} is not a {task.name} label; "
                            f"allowed: {', '.join(task.labels)}")
        out[i] = k
    return out


def write_task_file(path, table: TaskTable, records: list[Any]) -> None:
    """Write `records` (as `TaskTable.records` holds them) in the table's format, with its header.
    Not atomic by itself: callers write to a temporary name and rename."""
    path = Path(path)
    fmt = table.task.format
    with open(path, "w", encoding="utf-8", newline="") as f:
        if fmt == "jsonl":
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif fmt == "csv":
            writer = csv.writer(f, lineterminator="\n")
            # the writer quotes a field holding the terminator "\n" but not a bare "\r", which a
            # reader would take for a line end: a row with one is written fully quoted
            quoted = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL)
            for row in ([table.header] if table.header is not None else []) + list(records):
                (quoted if any("\r" in str(field) for field in row) else writer).writerow(row)
        else:
            rows = ([table.header] if table.header is not None else []) + records
            for row in rows:
                for field in row:
                    if "\t" in field or "\n" in field or "\r" in field:
                        raise DataError(f"{path}: cannot write {_show(field)} to a TSV file (it holds a tab "
                                        "or a line break, which TSV without quoting cannot hold)")
                f.write("\t".join(row) + "\n")
