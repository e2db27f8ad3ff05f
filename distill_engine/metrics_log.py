"""The records of a run's metrics.jsonl as tools read them: which fields describe a record and
which are its values, and reading the file back.

The runner writes one JSON object a line (`Runner.log`): `event` (start, train, eval, phase_end,
state, teacher_cache, augmented, resume, interrupted, failed, end), usually `phase` and `step`,
and always `time` (wall-clock seconds since the epoch). A `train` record's values are its loss
terms, keyed by `LossTerm.name` (e.g. "hidden_mse", or "hidden_mse_1" and "hidden_mse_2" when a
phase has two terms of one kind), `total` and `lr`; an `eval` record's values are the dev metrics.
An `eval` or `phase_end` record of a classification task also carries `classes`, its confusion
matrix (`distill_engine.tasks.classes`): not a number, so not one of its values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# the fields that say what a record is, when and where; every other number is one of its values
RECORD_FIELDS = frozenset({"event", "phase", "step", "epoch", "elapsed_s", "time"})


def record_values(record: dict) -> dict[str, float]:
    """The finite numbers a train or eval record carries (loss terms, total, lr; or dev metrics)."""
    return {key: float(value) for key, value in record.items()
            if key not in RECORD_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


def read_records(path: Path) -> tuple[list[dict], int]:
    """The records of a metrics.jsonl and the number of lines that are not whole records (a kill
    can cut the last line short)."""
    records, damaged = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                damaged += 1
                continue
            if isinstance(record, dict) and "event" in record:
                records.append(record)
            else:
                damaged += 1
    return records, damaged
