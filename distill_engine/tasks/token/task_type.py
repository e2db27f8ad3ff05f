"""The token task: its definition (a recipe's `[data.task]` with `type = "token"`) and its type.

    [data.task]
    type = "token"
    name = "conll2003"
    format = "conll"           # or "jsonl": {"tokens": [...], "tags": [...]} a line
    tag_column = -1            # CoNLL: the tags' column (0-based, negative from the end)
    scheme = "IOB2"            # "IOB1", "IOB2" (BIO) or "BIOES"
    labels = []                # the tag set; empty: collected from data.train, written into the run
    label_all_tokens = false   # train on every piece of a word, not only its first
    metrics = ["entity_f1", "entity_precision", "entity_recall", "token_f1"]

`task = "conll2003"` is the preset of the shared CoNLL-2003 files (IOB2, the tags in the last of
four columns, the label order of Hugging Face's conll2003 dataset).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from distill_engine.data.encoded import EncodedDataset
from distill_engine.data.textfile import read_text
from distill_engine.errors import DataError, FieldError
from distill_engine.io import write_text_atomically
from distill_engine.tasks.fields import find_preset, one_of, task_name
from distill_engine.tasks.metrics import check_metrics, score
from distill_engine.tasks.token.encoding import encode_words, word_predictions
from distill_engine.tasks.token.metrics import ENTITY_METRICS, KIND, entity_details
from distill_engine.tasks.token.reader import DOCSTART, TokenExamples, collect_labels, read_token_examples
from distill_engine.tasks.token.schemes import OUTSIDE, SCHEMES, malformed

FORMATS = ("conll", "jsonl")
DEFAULT_METRICS = ("entity_f1", "entity_precision", "entity_recall", "token_f1")
# The phases that train the prediction layer, and the loss each trains on when a recipe names none:
# the gold tags to fine-tune, TinyBERT's soft cross-entropy per word to distil.
_DEFAULT_LOSSES = {"teacher_finetune": ("token_cross_entropy",), "task_distill_prediction": ("token_soft_cross_entropy",)}


def _tag_column(_instance, _attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError("tag_column", f"{value!r} is not a column index (0-based; negative counts from the end)")


@attrs.frozen
class TokenTask:
    """A `[data.task]` table of type "token" (see the module's docstring)."""

    name: str = attrs.field(validator=task_name)
    format: str = attrs.field(default="conll", validator=one_of(FORMATS))
    scheme: str = attrs.field(default="IOB2", validator=one_of(SCHEMES))
    labels: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    tag_column: int = attrs.field(default=-1, validator=_tag_column)
    label_all_tokens: bool = False
    metrics: tuple[str, ...] = attrs.field(default=DEFAULT_METRICS, converter=tuple)

    def __attrs_post_init__(self) -> None:
        seen = set()
        for i, label in enumerate(self.labels):
            why = malformed(label, self.scheme) if isinstance(label, str) else f"{label!r} is not a tag"
            if why:
                raise FieldError(f"labels[{i}]", why)
            if label in seen:
                raise FieldError(f"labels[{i}]", f'"{label}" appears twice')
            seen.add(label)
        if len(self.labels) == 1:
            raise FieldError("labels", f"{list(self.labels)}: a tagger needs two tags at least")
        if not self.metrics or any(m not in DEFAULT_METRICS for m in self.metrics):
            # a metric plugin's name, or a mistake: the registry decides (the preset never gets
            # here, so building it while the registry is being filled asks the registry nothing)
            check_metrics(self.metrics, KIND, "a token task")

    def describe(self) -> dict:
        return {"name": self.name, "format": self.format, "scheme": self.scheme, "labels": list(self.labels),
                "tag_column": self.tag_column, "label_all_tokens": self.label_all_tokens,
                "metrics": list(self.metrics)}


CONLL2003 = TokenTask("conll2003", "conll", "IOB2",
                      ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"))
PRESETS = {"conll2003": CONLL2003}


class TokenTaskType:
    """A tag per word: named-entity recognition and chunking, CoNLL or JSON Lines files."""

    name = "token"
    description = ("a tag per word (NER, chunking): CoNLL column files or JSON Lines; IOB1, IOB2 or BIOES; "
                   "entity F1 as conlleval/seqeval count it")
    definition = TokenTask
    head = "token"
    submission_format = "the input's format with a predicted tag column"

    def presets(self) -> Mapping[str, TokenTask]:
        return PRESETS

    def preset(self, name: str) -> TokenTask | None:
        return find_preset(PRESETS, name)

    def complete(self, task: TokenTask, train: Path | None) -> TokenTask:
        """The definition with its label set: the recipe's, or the tags of `train` (data.train)."""
        if task.labels:
            return task
        if train is None:
            raise FieldError("labels", "is empty and there is no data.train to collect the tags from: "
                                       "list the tags (labels = [\"O\", \"B-PER\", ...])")
        return attrs.evolve(task, labels=collect_labels(train, task))

    def read(self, path: Path, task: TokenTask) -> TokenExamples:
        if not task.labels:  # plan() completes the definition first; a library caller may not have
            raise FieldError("labels", "is empty: complete the task with its training file first (TokenTaskType.complete)")
        return read_token_examples(path, task)

    def encode(self, examples: TokenExamples, tokenizer: Any, max_seq_length: int) -> EncodedDataset:
        return encode_words(examples, tokenizer, max_seq_length)

    def num_outputs(self, task: TokenTask) -> int:
        return len(task.labels)

    def default_losses(self, task: TokenTask, phase_kind: str) -> tuple[str, ...] | None:
        return _DEFAULT_LOSSES.get(phase_kind)

    def label_source(self, task: TokenTask) -> str:
        return "tags" if task.format == "jsonl" else f"tag column ({task.tag_column})"

    def decode(self, task: TokenTask, outputs: np.ndarray, data: EncodedDataset, examples: TokenExamples
               ) -> list[list[str]]:
        """Each sentence's predicted tags, a string per word."""
        return [[task.labels[int(i)] for i in p] for p in word_predictions(outputs, data, examples)]

    def evaluate(self, task: TokenTask, outputs: np.ndarray, data: EncodedDataset, examples: TokenExamples
                 ) -> dict[str, float]:
        """The task's metrics over words, then (with an entity metric) each entity type's
        precision, recall, F1 and gold count, keyed "<metric>/<type>"."""
        if examples.tags is None:
            raise DataError("the split has no tags to score the predictions against")
        predicted = self.decode(task, outputs, data, examples)
        gold = [[task.labels[int(i)] for i in t] for t in examples.tags]
        out = score(task.metrics, predicted, gold, where=f"task {task.name}")
        if any(m in ENTITY_METRICS for m in task.metrics):
            out.update(entity_details(predicted, gold))
        return out

    def write_predictions(self, task: TokenTask, source: Path, outputs: np.ndarray, data: EncodedDataset,
                          path: Path) -> int:
        """The source file again with each word's predicted tag: a last column on CoNLL lines
        (-DOCSTART- lines get O, so that every word line has as many columns: conlleval's input),
        a "predicted_tags" list in each JSON Lines record. Returns the sentences written."""
        examples = self.read(source, task)
        predicted = self.decode(task, outputs, data, examples)
        lines = read_text(source, "data file").split("\n")
        if task.format == "jsonl":
            for sentence, tags in zip(examples.lines, predicted):
                record = json.loads(lines[sentence[0] - 1])
                lines[sentence[0] - 1] = json.dumps({**record, "predicted_tags": tags}, ensure_ascii=False)
        else:
            for sentence, tags in zip(examples.lines, predicted):
                for line, tag in zip(sentence, tags):
                    lines[line - 1] = f"{lines[line - 1].rstrip()} {tag}"
            for i, line in enumerate(lines):
                if line.split()[:1] == [DOCSTART]:
                    lines[i] = f"{line.rstrip()} {OUTSIDE}"
        write_text_atomically(path, "\n".join(lines))
        return len(predicted)
