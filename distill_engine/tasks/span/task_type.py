"""The span task: its definition (a recipe's `[data.task]` with `type = "span"`) and its type.

    [data.task]
    type = "span"
    name = "squad"
    format = "squad"           # SQuAD's JSON (v1.1, v2.0), or "jsonl": a question a line
    doc_stride = 128           # context pieces consecutive windows share (Hugging Face's run_qa)
    max_query_length = 64      # a question keeps its first pieces
    max_answer_length = 30     # the longest answer decoded, in pieces
    n_best_size = 20           # start and end positions considered per window
    metrics = ["squad_f1", "exact_match"]

`task = "squad"` is the preset (SQuAD JSON, run_qa's and the MindSpore zoo's settings). The row
length is the recipe's data.max_seq_length (384 in the field).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from distill_engine.data.encoded import EncodedDataset
from distill_engine.errors import DataError, FieldError
from distill_engine.io import write_text_atomically
from distill_engine.tasks.fields import find_preset, one_of, task_name
from distill_engine.tasks.metrics import check_metrics, score
from distill_engine.tasks.span.encoding import best_spans, encode_spans
from distill_engine.tasks.span.metrics import KIND
from distill_engine.tasks.span.reader import SpanExamples, read_span_examples

FORMATS = ("squad", "jsonl")
DEFAULT_METRICS = ("squad_f1", "exact_match")
# The phases that train the prediction layer, and the loss each trains on when a recipe names none:
# the gold start and end to fine-tune, the teacher's soft start and end (TinyBERT's) to distil.
_DEFAULT_LOSSES = {"teacher_finetune": ("span_cross_entropy",), "task_distill_prediction": ("span_soft_cross_entropy",)}


def _count(low: int):
    def check(_instance, attribute, value) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise FieldError(attribute.name, f"{value!r} is not a whole number >= {low}")
    return check


@attrs.frozen
class SpanTask:
    """A `[data.task]` table of type "span" (see the module's docstring)."""

    name: str = attrs.field(validator=task_name)
    format: str = attrs.field(default="squad", validator=one_of(FORMATS))
    doc_stride: int = attrs.field(default=128, validator=_count(0))
    max_query_length: int = attrs.field(default=64, validator=_count(1))
    max_answer_length: int = attrs.field(default=30, validator=_count(1))
    n_best_size: int = attrs.field(default=20, validator=_count(1))
    metrics: tuple[str, ...] = attrs.field(default=DEFAULT_METRICS, converter=tuple)

    def __attrs_post_init__(self) -> None:
        if not self.metrics or any(m not in DEFAULT_METRICS for m in self.metrics):
            # a metric plugin's name, or a mistake: the registry decides (the preset never gets here)
            check_metrics(self.metrics, KIND, "a span task")

    def describe(self) -> dict:
        return {"name": self.name, "format": self.format, "doc_stride": self.doc_stride,
                "max_query_length": self.max_query_length, "max_answer_length": self.max_answer_length,
                "n_best_size": self.n_best_size, "metrics": list(self.metrics)}


PRESETS = {"squad": SpanTask("squad")}


class SpanTaskType:
    """An answer cut from a passage: extractive question answering, SQuAD's JSON or JSON Lines."""

    name = "span"
    description = ("an answer span cut from a context (extractive QA): SQuAD JSON v1.1/v2.0 or JSON Lines; "
                   "windows with doc_stride as run_qa; SQuAD's exact match and F1")
    definition = SpanTask
    head = "span"
    submission_format = "SQuAD's prediction JSON {question id: answer}"
    predictions_file = "test_predictions.json"

    def presets(self) -> Mapping[str, SpanTask]:
        return PRESETS

    def preset(self, name: str) -> SpanTask | None:
        return find_preset(PRESETS, name)

    def read(self, path: Path, task: SpanTask) -> SpanExamples:
        return read_span_examples(path, task)

    def encode(self, examples: SpanExamples, tokenizer: Any, max_seq_length: int) -> EncodedDataset:
        return encode_spans(examples, tokenizer, max_seq_length)

    def num_outputs(self, task: SpanTask) -> int:
        return 2  # a start and an end logit per position

    def default_losses(self, task: SpanTask, phase_kind: str) -> tuple[str, ...] | None:
        return _DEFAULT_LOSSES.get(phase_kind)

    def label_source(self, task: SpanTask) -> str:
        return '"answers" (text and answer_start)'

    def decode(self, task: SpanTask, outputs: np.ndarray, data: EncodedDataset, examples: SpanExamples) -> list[str]:
        """Each question's answer text, the best span over its windows."""
        return best_spans(outputs, data, examples.contexts, task.n_best_size, task.max_answer_length)

    def evaluate(self, task: SpanTask, outputs: np.ndarray, data: EncodedDataset, examples: SpanExamples
                 ) -> dict[str, float]:
        """The task's metrics per question (not per window), the best over its gold answers."""
        if examples.answers is None:
            raise DataError("the split has no answers to score the predictions against")
        predicted = self.decode(task, outputs, data, examples)
        gold = [[text for text, _ in answers] for answers in examples.answers]
        return score(task.metrics, predicted, gold, where=f"task {task.name}")

    def write_predictions(self, task: SpanTask, source: Path, outputs: np.ndarray, data: EncodedDataset,
                          path: Path) -> int:
        """SQuAD's prediction file, `{question id: answer text}` (what the official evaluation script
        reads). Returns the questions written."""
        examples = self.read(source, task)
        predicted = self.decode(task, outputs, data, examples)
        write_text_atomically(path, json.dumps(dict(zip(examples.ids, predicted)), ensure_ascii=False, indent=1) + "\n")
        return len(predicted)
