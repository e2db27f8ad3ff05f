"""Predictions of a trained model: load any checkpoint, classify texts or a task file, write them.

`prepare()` reads a checkpoint (neutral, Hugging Face or MindSpore, found by its files when no
format is given) and resolves what its inputs are: the task (given, or the one recorded with the
checkpoint), the vocabulary, the sequence length. `Predictor` runs it on a backend. `predict_file`
writes a task file back with a `prediction` column and one `p_<label>` column per class, or a
GLUE submission (`index<TAB>prediction`). Every problem is one `DistillError` naming the argument,
file or column, raised before any prediction runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from distill_engine.checkpoint import CHECKPOINT_FORMATS, MANIFEST, Checkpoint, check_tensors
from distill_engine.data import (EncodedDataset, Task, TaskTable, batch_order, read_task_file,
                                 trim_padding, write_task_file)
from distill_engine.tasks.registry import task_type_of
from distill_engine.data.tokenizer import check_vocab
from distill_engine.models.registry import family_of
from distill_engine.errors import CheckpointError, DataError, DistillError
from distill_engine.io import write_atomically, write_text_atomically

FORMATS = CHECKPOINT_FORMATS
DEFAULT_MAX_SEQ_LENGTH = 128
# Batches run sorted by length and cut to their longest sentence rounded up to this (the
# recipes' data.pad_to_multiple_of): few shapes for a compiling backend, little padding.
PAD_MULTIPLE = 16
GLUE_INDEX = "index"


@attrs.frozen
class Prediction:
    """One text's prediction: the label name (a regression task: the score, formatted), the
    probability of each label (softmax of the logits; empty for a regression task), and the
    score of a regression task (None for a classification)."""

    label: str
    probabilities: dict[str, float]
    score: float | None = None


@attrs.frozen(eq=False)
class Prepared:
    """A checkpoint read and checked, with what its inputs are: everything but the backend."""

    path: Path
    format: str
    checkpoint: Checkpoint
    task: Task | None
    labels: tuple[str, ...]  # the class names in the order of the outputs; () for regression
    vocab: Path
    max_seq_length: int
    lowercase: bool

    @property
    def config(self):
        return self.checkpoint.config

    @property
    def is_regression(self) -> bool:
        return not self.labels


def detect_format(path) -> str:
    """The format of a checkpoint by its files: a directory with manifest.json is neutral, one with
    config.json Hugging Face, a .ckpt file (or a directory holding one) MindSpore."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    if p.is_file():
        if p.suffix == ".ckpt":
            return "mindspore"
        raise CheckpointError(f"{p}: not a checkpoint (a directory, or a MindSpore .ckpt file); give --format")
    if (p / MANIFEST).is_file():
        return "neutral"
    if (p / "config.json").is_file() and any((p / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
        return "huggingface"
    if any(p.glob("*.ckpt")):
        return "mindspore"
    if (p / "run.json").is_file():
        raise CheckpointError(f"{p} is a run directory; give one of its checkpoints, e.g. {p / 'td2' / 'best'}")
    raise CheckpointError(f"{p}: not a checkpoint: no {MANIFEST} (neutral), config.json with weights (Hugging Face) "
                          "or .ckpt file (MindSpore)")


def recorded_inputs(checkpoint: Checkpoint, path: Path) -> dict:
    """What a checkpoint says of its inputs ({"task", "max_seq_length", "lowercase"}, as far as
    known): its manifest's "data" (runs record it), else the recipe.json of the run it came from
    (`<run>/<phase>/<name>`), else nothing."""
    data = checkpoint.manifest.get("data")
    if isinstance(data, dict):
        return data
    recipe_json = Path(path).resolve().parent.parent / "recipe.json"
    if checkpoint.manifest.get("run") is not None and recipe_json.is_file():
        try:
            data = json.loads(recipe_json.read_text())["recipe"]["data"]
            return {k: data[k] for k in ("task", "max_seq_length", "lowercase") if k in data}
        except (OSError, ValueError, KeyError, TypeError):
            return {}
    return {}


def task_of(value: Any) -> Task | None:
    """A task from what a user or a manifest gives: a `Task`, a preset's name, an inline TOML
    table, a recipe .toml (its data.task), or a definition as a dict; None for nothing."""
    if value is None or value == "":
        return None
    if isinstance(value, Task):
        return value
    from distill_engine.recipe.task_argument import parse_task_argument, task_from_table

    if isinstance(value, dict):
        return task_from_table(value, source="task")
    if isinstance(value, str):
        return parse_task_argument(value)
    raise DataError(f"task: expected a preset's name, a table or a recipe file, got {type(value).__name__}")


def _hf_labels(path: Path, n: int) -> tuple[str, ...] | None:
    """The id2label names of a Hugging Face config.json, when they name every output."""
    try:
        id2label = json.loads((path / "config.json").read_text()).get("id2label") or {}
        labels = tuple(str(id2label.get(str(i), id2label.get(i))) for i in range(n))
    except (OSError, ValueError, AttributeError):
        return None
    return labels if len(id2label) == n and "None" not in labels else None


def prepare(path, format: str | None = None, *, task: Any = None, vocab=None, max_seq_length: int | None = None,
            need_head: bool = True) -> Prepared:
    """Read and check a checkpoint and resolve its inputs (see the module docstring).

    `task` (else the checkpoint's recorded task) gives the label names; without either, the
    labels are a Hugging Face config's id2label or "0", "1", ...; a one-output head is a
    regression. `need_head`: refuse a model without a classification head."""
    from distill_engine.planning import check_finite, load_checkpoint

    path = Path(path)
    if format is None:
        format = detect_format(path)
    elif format not in FORMATS:
        raise CheckpointError(f'--format "{format}" is not one of {", ".join(FORMATS)}')
    ckpt = load_checkpoint(str(path), format, "checkpoint")
    config = ckpt.config
    check_tensors(config, ckpt.state, f"checkpoint {path}")
    check_finite(ckpt.state, f"checkpoint {path}")
    recorded = recorded_inputs(ckpt, path)
    given = task is not None and task != ""
    resolved = task_of(task if given else recorded.get("task"))
    n = config.num_labels
    if need_head and n and config.head != "pooled":
        # predicting reads one label per text; a tagger's predictions on a CoNLL or JSON Lines file
        # come from a run (an evaluate phase with data.test), raw text with offsets is not here yet
        raise CheckpointError(f"checkpoint {path}: the model has a {config.head} head; predict reads tasks with "
                              "one label per text (a pooled head); a token task's predictions are written by an "
                              "evaluate phase with data.test (docs/tasks.md)")
    if need_head and not n:
        raise CheckpointError(f"checkpoint {path}: the model has no classification head (num_labels 0); predict "
                              "needs a fine-tuned teacher or a distilled student (e.g. a run's td2/best)")
    if resolved is not None and n and resolved.num_labels != n:
        raise CheckpointError(f"{'--task' if given else 'the recorded task'} {resolved.name} has "
                              f"{resolved.num_labels} output{'s' if resolved.num_labels > 1 else ''}, the checkpoint's "
                              f"head ({path}) has {n}")
    if resolved is not None:
        labels = resolved.labels
    elif n == 1:
        labels = ()
    else:
        labels = (_hf_labels(path, n) if format == "huggingface" else None) or tuple(str(i) for i in range(n))

    vocab_path = Path(vocab) if vocab else ckpt.vocab
    if vocab_path is None:
        raise DataError(f"--vocab: no vocab.txt in or beside {path}; give the model's vocab.txt")
    try:
        size = getattr(family_of(config), "check_vocab", check_vocab)(vocab_path)
    except DataError as exc:
        raise DataError(f"--vocab: {exc}") from None
    if size > config.vocab_size:
        raise DataError(f"--vocab: {vocab_path} has {size} tokens, more than the model's vocab_size "
                        f"{config.vocab_size}: it is not this model's vocabulary")

    positions = getattr(config, "max_sequence_length", config.max_position_embeddings)
    if max_seq_length is None:
        length = recorded.get("max_seq_length") or min(DEFAULT_MAX_SEQ_LENGTH, positions)
    else:
        length = max_seq_length
        if not isinstance(length, int) or isinstance(length, bool) or length < 3:
            raise DataError(f"--max-seq-length {length}: expected a whole number of tokens, at least 3")
        if length > positions:
            raise DataError(f"--max-seq-length {length} exceeds the model's {positions} positions")
    lowercase = bool(recorded.get("lowercase", True))
    return Prepared(path, format, ckpt, resolved, tuple(labels), vocab_path, int(min(length, positions)), lowercase)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (the probabilities predict writes)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def predict_batches(data: EncodedDataset, batch_size: int) -> list[tuple[np.ndarray, dict]]:
    """(rows, batch) of each batch `Predictor.run` feeds the model: rows sorted by length, each
    batch cut to its longest sentence rounded up to `PAD_MULTIPLE`; with more than one batch, the
    last is filled up to `batch_size` rows with repeats of its first (the extra outputs are
    dropped), so a compiling backend builds one graph per length."""
    if batch_size < 1:
        raise DataError(f"--batch-size {batch_size}: expected at least 1")
    order = batch_order(data, batch_size, shuffle=False, seed=0, batching="bucketed") if len(data) else []
    out = []
    for rows in order:
        padded = rows if len(order) == 1 else np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
        out.append((rows, trim_padding(data.batch(padded), PAD_MULTIPLE)))
    return out


# What `Predictor.last_speed` holds after a run (docs/python-api.md lists the same keys):
SPEED_KEYS = {
    "sentences": "the texts predicted",
    "seconds": "the model's time on them (tokenising excluded)",
    "batches": "the forwards",
    "batch_size": "rows per forward: the batch size asked for, or fewer when every text fits in one batch",
    "sentences_per_s": "sentences / seconds",
    "ms_per_batch": "milliseconds per forward",
}


class Predictor:
    """A checkpoint's model on a backend, ready to classify texts (`distill_engine.load` returns one).

    Attributes: `config` (the `BertConfig`), `backend` (the backend's name), `device`, `model`
    (the backend's raw `Model`: `predict(batch)` logits, `forward(batch)` every tap), `task` (or
    None), `labels`, `tokenizer`, `max_seq_length`, `checkpoint` (the loaded `Checkpoint`), and
    after each run `last_speed`, a dict with the keys `SPEED_KEYS` name."""

    def __init__(self, prepared: Prepared, backend: str = "torch", device: str = "cpu"):
        from distill_engine.device import Device
        from distill_engine.plugins import get_backend

        self.prepared = prepared
        self.plugin = get_backend(backend)
        self.backend = self.plugin.name
        self.device = Device.parse(device)
        self.plugin.check_device(self.device)
        # the model's family's tokenizer (BERT's WordPiece, RoBERTa's BPE, ...)
        self.tokenizer = family_of(prepared.config).tokenizer(prepared.vocab, prepared.lowercase)
        self.model = self.plugin.load_model(prepared.config, prepared.checkpoint.state, self.device)
        self.last_speed: dict | None = None

    config = property(lambda self: self.prepared.config)
    task = property(lambda self: self.prepared.task)
    labels = property(lambda self: self.prepared.labels)
    max_seq_length = property(lambda self: self.prepared.max_seq_length)
    checkpoint = property(lambda self: self.prepared.checkpoint)

    def __repr__(self) -> str:
        c = self.config
        return (f"<Predictor {self.prepared.path} ({self.prepared.format}, {c.num_hidden_layers}x{c.hidden_size}) "
                f"on {self.backend} {self.device}; labels {list(self.labels) or 'regression'}>")

    def encode(self, texts: Sequence[str] | str, texts_b: Sequence[str] | str | None = None) -> EncodedDataset:
        """Token ids of the texts (pairs with `texts_b`), padded to `max_seq_length`."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if isinstance(texts_b, str):
            texts_b = [texts_b]
        task = self.task
        if task is not None and task.is_pair and texts_b is None:
            raise DataError(f"texts_b: task {task.name} is a sentence-pair task; give the second texts too")
        if task is not None and not task.is_pair and texts_b is not None:
            raise DataError(f"texts_b: task {task.name} reads one text per example; give texts only")
        return self.tokenizer.encode(texts, texts_b, self.max_seq_length)

    def run(self, data: EncodedDataset, batch_size: int = 32) -> np.ndarray:
        """Logits [N, outputs] of an encoded dataset, in its order. Batches are sorted by length and
        cut to their longest sentence (rounded up to 16 tokens); with more than one batch every
        batch holds `batch_size` rows (the last one is filled up with repeats, dropped after), so a
        compiling backend builds one graph per length. Sets `last_speed`."""
        n = len(data)
        logits = np.zeros((n, self.config.num_labels), np.float32)
        batches = predict_batches(data, batch_size)
        seconds = 0.0
        for rows, batch in batches:
            start = time.perf_counter()
            out = self.model.predict(batch)
            seconds += time.perf_counter() - start
            logits[rows] = np.asarray(out, np.float32)[: len(rows)]
        # the rows the model was given per forward: one batch holds only the texts there are
        rows_per_batch = max((len(batch["input_ids"]) for _, batch in batches), default=0)
        self.last_speed = {"sentences": n, "seconds": seconds, "batches": len(batches), "batch_size": rows_per_batch,
                           "sentences_per_s": n / seconds if seconds else 0.0,
                           "ms_per_batch": 1000.0 * seconds / len(batches) if batches else 0.0}
        return logits

    def logits(self, texts, texts_b=None, *, batch_size: int = 32) -> np.ndarray:
        """Logits [N, outputs] of texts (and `texts_b`), in their order."""
        self._need_head()
        return self.run(self.encode(texts, texts_b), batch_size)

    def predict(self, texts, texts_b=None, *, batch_size: int = 32) -> list[Prediction]:
        """One `Prediction` per text (a single string is one text)."""
        return self.predictions(self.logits(texts, texts_b, batch_size=batch_size))

    def predictions(self, logits: np.ndarray) -> list[Prediction]:
        """`Prediction`s of logits [N, outputs]."""
        if not self.labels:
            return [Prediction(f"{float(row[0]):.6g}", {}, float(row[0])) for row in logits]
        probs = softmax(logits)
        return [Prediction(self.labels[int(np.argmax(p))], {label: float(v) for label, v in zip(self.labels, p)})
                for p in probs]

    def _need_head(self) -> None:
        if not self.config.num_labels:
            raise CheckpointError(f"{self.prepared.path}: the model has no classification head to predict with")


def load(path, format: str | None = None, backend: str = "torch", device: str = "cpu", *, task: Any = None,
         vocab=None, max_seq_length: int | None = None) -> Predictor:
    """Any supported checkpoint as a `Predictor` on `backend` / `device` (see `prepare` for the
    arguments). A model without a classification head loads too (for `phase_losses`), but cannot
    predict."""
    return Predictor(prepare(path, format, task=task, vocab=vocab, max_seq_length=max_seq_length, need_head=False),
                     backend, device)


# --- files -------------------------------------------------------------------------------------------
def check_output(path, flag: str, *, overwrite: bool, inputs: Sequence[Path] = ()) -> Path:
    """An output path that may be written: not an existing file without `overwrite`, not a folder,
    not one of the inputs."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{flag} {path}: is a folder, expected a file name")
    if any(path.resolve() == Path(i).resolve() for i in inputs):
        raise DataError(f"{flag} {path}: is the input file; write the predictions to another file")
    if path.exists() and not overwrite:
        raise DataError(f"{flag} {path}: the file exists; pass --overwrite to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise DataError(f"{flag} {path}: {path.parent} is not a folder")
    return path


def prediction_columns(labels: Sequence[str]) -> list[str]:
    """The columns predict adds: "prediction", then "p_<label>" per class."""
    return ["prediction", *(f"p_{label}" for label in labels)]


def _columns_of(table: TaskTable) -> list:
    if table.header is not None:
        return list(table.header)
    return sorted({k for r in table.records if isinstance(r, dict) for k in r})


def check_input(table: TaskTable, labels: Sequence[str], *, glue_submission: bool = False) -> None:
    """The file can take the prediction columns (it has none of their names) and, for a GLUE
    submission, has an "index" column."""
    columns = _columns_of(table)
    clash = [c for c in prediction_columns(labels) if c in columns]
    if clash:
        raise DataError(f'{table.path}: already has a column "{clash[0]}", which predict adds; rename it (or '
                        "predict from the original file)")
    if glue_submission and GLUE_INDEX not in columns:
        shown = ", ".join(json.dumps(c) for c in columns) or "none (no header)"
        raise DataError(f'--glue-submission: {table.path} has no column "{GLUE_INDEX}" (GLUE test files have one); '
                        f"the file has columns: {shown}")
    if glue_submission and table.header is None:
        for line, record in zip(table.lines, table.records):
            if GLUE_INDEX not in record:
                raise DataError(f'--glue-submission: {table.path}:{line}: the record has no key "{GLUE_INDEX}"')


def _value_fields(predictions: list[Prediction], labels: Sequence[str]) -> list[list[Any]]:
    out = []
    for p in predictions:
        if not labels:
            out.append([float(f"{p.score:.6g}")])
        else:
            out.append([p.label, *(float(f"{p.probabilities[label]:.6g}") for label in labels)])
    return out


def _text(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def output_records(table: TaskTable, predictions: list[Prediction], labels: Sequence[str]) -> tuple[list | None, list]:
    """(header, records) of the output: each input record with its prediction columns appended
    (objects: added as keys). A short row is filled up to the header's (or the widest row's) width
    first, so the new columns line up."""
    names = prediction_columns(labels)
    values = _value_fields(predictions, labels)
    fmt = table.task.format
    width = len(table.header) if table.header is not None else max(
        (len(r) for r in table.records if isinstance(r, list)), default=0)
    records = []
    for record, vals in zip(table.records, values):
        if isinstance(record, dict):
            records.append({**record, **dict(zip(names, vals))})
        else:
            row = list(record) + [""] * (width - len(record)) if fmt != "jsonl" else list(record)
            records.append(row + (vals if fmt == "jsonl" else [_text(v) for v in vals]))
    header = None if table.header is None else list(table.header) + names
    return header, records


def write_predictions(path: Path, table: TaskTable, predictions: list[Prediction], labels: Sequence[str]) -> None:
    """The input file in its own format with the prediction columns, written atomically."""
    header, records = output_records(table, predictions, labels)
    write_atomically(path, lambda tmp: write_task_file(tmp, attrs.evolve(table, header=header), records))


def write_glue_submission(path: Path, table: TaskTable, predictions: list[Prediction]) -> None:
    """GLUE's submission file: "index<TAB>prediction", one row per example, written atomically."""
    at = table.header.index(GLUE_INDEX) if table.header is not None else GLUE_INDEX
    lines = ["index\tprediction"] + [f"{r[at]}\t{p.label}" for r, p in zip(table.records, predictions)]
    write_text_atomically(path, "\n".join(lines) + "\n")


def read_input(path, prepared: Prepared, *, glue_submission: bool = False) -> tuple[TaskTable, Any]:
    """The input file read as the task's format, checked (columns, labels, the prediction columns'
    names), and its parsed labels (None without a label column)."""
    if prepared.task is None:
        raise DataError(f"--task: no task is recorded with {prepared.path}, and the input file's columns depend on "
                        "it; give --task (a preset such as sst2, an inline table or a recipe file)")
    table = read_task_file(path, prepared.task)
    check_input(table, prepared.labels, glue_submission=glue_submission)
    return table, table.examples()


def predict_table(predictor: Predictor, table: TaskTable, examples, *, batch_size: int = 32
                  ) -> tuple[list[Prediction], np.ndarray, dict | None]:
    """(predictions, logits, metrics on the file's labels or None) of a read input file."""
    data = predictor.encode(examples.text_a, examples.text_b)
    logits = predictor.run(data, batch_size)
    metrics = None
    if examples.labels is not None and len(examples):
        metrics = task_type_of(predictor.task).evaluate(predictor.task, logits, data, examples)
    return predictor.predictions(logits), logits, metrics


def text_lines(predictions: list[Prediction], labels: Sequence[str], texts: Sequence[str],
               texts_b: Sequence[str] | None = None) -> list[str]:
    """Predictions of texts as TSV lines: a header ("text", "text_b", the prediction columns), then
    one line per text (tabs in a text become spaces)."""
    names = ["text"] + (["text_b"] if texts_b else []) + prediction_columns(labels)
    lines = ["\t".join(names)]
    for i, vals in enumerate(_value_fields(predictions, labels)):
        row = [texts[i]] + ([texts_b[i]] if texts_b else [])
        lines.append("\t".join(t.replace("\t", " ") for t in row) + "\t" + "\t".join(_text(v) for v in vals))
    return lines


def describe_speed(predictor: Predictor) -> str:
    """One line: sentences, model time, sentences/s and ms per batch of the last run."""
    s = predictor.last_speed or {}
    return (f"predict: {s.get('sentences', 0)} sentences in {s.get('seconds', 0.0):.2f} s of model time: "
            f"{s.get('sentences_per_s', 0.0):.1f} sentences/s, {s.get('ms_per_batch', 0.0):.1f} ms per batch of "
            f"{s.get('batch_size')} ({predictor.backend} on {predictor.device}; first batches include any "
            "graph compilation)")


__all__ = ["FORMATS", "Prediction", "Predictor", "Prepared", "DistillError", "check_output", "detect_format", "load",
           "predict_table", "prepare", "read_input", "text_lines", "write_glue_submission", "write_predictions"]
