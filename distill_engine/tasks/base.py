"""The task-type protocol: what a kind of task (sentence classification, tagging, span
extraction) owns, so that the runner, `plan()` and `predict` need not know which kind it is.

A task type is registered through the `register_task_types` hook. Its *definition* is the table a
recipe writes as `data.task` (`type = "<name>"` picks the type; without it, "sequence"), or one of
its presets by name ("sst2"). The engine calls the type, never the definition's fields:

    read        a file of the task into examples (every problem one DataError naming file:line)
    encode      examples into model rows (`EncodedDataset`: one example may become several rows;
                `example_index` maps them back; labels aligned to the rows)
    head        the model head its outputs come from (`distill_engine.graph.taps.HEAD_LOGITS`:
                "pooled" one vector per row, "token" one per position, "span" start/end per position)
    evaluate    model outputs of every row into its metrics, computed per example
    write       a split's predictions in the task's own submission format
    class_counts  (optional) an evaluation's confusion matrix (`distill_engine.tasks.classes`):
                the run's output and report then show per-class figures, the majority-class
                baseline and a warning for a degenerate model; without it, the metrics alone

Model outputs cross the seam as numpy arrays, one entry per row along the first axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from distill_engine.data.encoded import EncodedDataset
from distill_engine.graph.taps import HEADS  # noqa: F401  (the heads a task type may ask for, and their logits)


@runtime_checkable
class Examples(Protocol):
    """What `TaskType.read` returns: a sized collection of examples whose `labels` is None for an
    unlabelled split (a GLUE test file) and anything else when gold answers are present."""

    labels: Any

    def __len__(self) -> int: ...

    # Optional: `head(n)`, the first n examples. `run.max_examples` (`--max-examples`) cuts the
    # dev split with it; examples without it are evaluated whole (`capped_examples`).


def capped_examples(examples: Examples, cap: int) -> Examples:
    """The first `cap` examples (0: all) where the examples can be cut (an optional `head`)."""
    head = getattr(examples, "head", None)
    return head(cap) if cap and len(examples) > cap and callable(head) else examples


@runtime_checkable
class TaskType(Protocol):
    """A kind of task. Registered through `register_task_types(register)` as `register(task_type)`."""

    name: str  # what a recipe writes as data.task.type
    description: str  # one line for `distill-engine tasks`
    definition: type  # the attrs class of its [data.task] tables; instances have `name` and `metrics`
    head: str  # one of HEADS: "pooled" (outputs [N, C]), "token" ([N, L, C]) or "span" ([N, L, 2])
    submission_format: str  # what write_predictions writes, for messages ("GLUE submission format")

    def presets(self) -> Mapping[str, Any]:
        """Ready-made definitions by name ("sst2", ...); may be empty."""

    def preset(self, name: str) -> Any | None:
        """The preset a user means by `name` (the type may ignore case or spelling), or None."""

    # Optional: `complete(task, train: Path | None) -> task`, the definition completed from the
    # training file (data.train; None without one) before anything else reads it, e.g. a tag set
    # collected from the file. plan() calls it when the type has it; the completed definition is
    # the run's (recipe.json records it). Without it the recipe's definition is used as written.

    def read(self, path: Path, task: Any) -> Examples:
        """Read one split of the task. Raise `DataError` naming the file (and line) of the first
        problem; an empty file is an error."""

    def encode(self, examples: Examples, tokenizer: Any, max_seq_length: int) -> EncodedDataset:
        """Encode examples into rows of at most `max_seq_length` pieces with the run's tokenizer
        (`distill_engine.data.WordPieceTokenizer`); labels go with the rows when present."""

    def num_outputs(self, task: Any) -> int:
        """The width of the head's output (classes, or 1 for a score)."""

    def default_losses(self, task: Any, phase_kind: str) -> tuple[str, ...] | None:
        """The loss kinds a phase of `phase_kind` trains on when the recipe names none, or None
        for the engine's defaults (TinyBERT's). The prediction-layer phases ("teacher_finetune",
        "task_distill_prediction") are the ones a task type usually decides."""

    def label_source(self, task: Any) -> str:
        """Where gold answers are in a file, for messages ('the "label" column')."""

    def evaluate(self, task: Any, outputs: np.ndarray, data: EncodedDataset, examples: Examples) -> dict[str, float]:
        """Every metric of `task.metrics`, from the outputs of every row of `data` (encoded from
        `examples`), computed per example. The first metric ranks checkpoints (higher is better).
        Details may follow the metrics, each keyed "<metric>/<detail>" (the token type's per
        entity type): they go into the run's results and logs beside the metrics."""

    def write_predictions(self, task: Any, source: Path, outputs: np.ndarray, data: EncodedDataset,
                          path: Path) -> int:
        """Write the predictions for the split read from `source` to `path` (atomically), in the
        task's own submission format (GLUE's for the sequence type); return the rows written."""
