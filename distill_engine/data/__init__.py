"""Data for distillation: GLUE readers, corpus packing, WordPiece encoding, batching and GLUE metrics."""

from distill_engine.data.corpus import pack_corpus, read_corpus_documents
from distill_engine.data.encoded import (BATCHINGS, BUCKET_WINDOW, EncodedDataset, batch_order, iterate_batches, num_batches,
                                         padded_length, trim_padding)
from distill_engine.data.glue import TASKS, GlueExamples, GlueTask, get_task, read_glue_tsv
from distill_engine.data.metrics import (
    METRICS,
    accuracy,
    compute_metrics,
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
    "METRICS",
    "TASKS",
    "EncodedDataset",
    "GlueExamples",
    "GlueTask",
    "WordPieceTokenizer",
    "accuracy",
    "batch_order",
    "compute_metrics",
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
    "read_glue_tsv",
    "spearman",
    "trim_padding",
]
