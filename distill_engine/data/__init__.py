"""Data for distillation: task definitions and readers (GLUE presets, TSV/CSV/JSONL), corpus packing, WordPiece encoding, batching and GLUE metrics."""

from distill_engine.data.corpus import pack_corpus, read_corpus_documents
from distill_engine.data.encoded import (BATCHINGS, BUCKET_WINDOW, EncodedDataset, batch_order, iterate_batches, num_batches,
                                         padded_length, trim_padding)
from distill_engine.data.tasks import (FORMATS, TASKS, Task, TaskExamples, TaskTable, get_task, read_task_examples,
                                       read_task_file, resolve_task, write_task_file)
from distill_engine.data.metrics import (
    accuracy,
    f1,
    mcc,
    pearson,
    primary_metric,
    spearman,
)
from distill_engine.data.tokenizer import WordPieceTokenizer

__all__ = [
    "BATCHINGS",
    "BUCKET_WINDOW",
    "TASKS",
    "EncodedDataset",
    "FORMATS",
    "Task",
    "TaskExamples",
    "TaskTable",
    "WordPieceTokenizer",
    "accuracy",
    "batch_order",
    "f1",
    "get_task",
    "iterate_batches",
    "mcc",
    "num_batches",
    "padded_length",
    "pack_corpus",
    "pearson",
    "primary_metric",
    "read_corpus_documents",
    "read_task_examples",
    "read_task_file",
    "resolve_task",
    "spearman",
    "trim_padding",
    "write_task_file",
]
