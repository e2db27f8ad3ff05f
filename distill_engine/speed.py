"""Inference speed of a model on a backend: sentences per second and milliseconds per batch.

Measured on the backend's `Model.predict` (the evaluation path), after warm-up calls (a compiling
backend builds its graphs there), as the median of repeated passes over the same batches: the
figure `predict`, run reports and `benchmarks/inference.py` print.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np


def inference_speed(model, batches: Sequence[dict[str, np.ndarray]], *, warmup: int = 1, repeats: int = 3) -> dict:
    """{"sentences_per_s", "ms_per_batch", "sentences", "batches", "repeats"} of `model.predict`
    over `batches` (numpy batches as the backend takes them), the median of `repeats` passes after
    `warmup` passes."""
    if not batches:
        raise ValueError("inference_speed needs at least one batch")
    for _ in range(warmup):
        for batch in batches:
            model.predict(batch)
    seconds = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        for batch in batches:
            model.predict(batch)
        seconds.append(time.perf_counter() - start)
    elapsed = statistics.median(seconds)
    sentences = int(sum(len(b["input_ids"]) for b in batches))
    return {"sentences_per_s": sentences / elapsed, "ms_per_batch": 1000.0 * elapsed / len(batches),
            "sentences": sentences, "batches": len(batches), "repeats": max(repeats, 1)}
