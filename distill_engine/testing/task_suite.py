"""Conformance checks of a task type, end to end on a backend: what the runner relies on.

A task-type plugin runs `check_task_type(type_name, task, path, backend, vocab)` from its tests
for every backend it is meant for (see tests/task_plugin_example). On a labelled file of the task
it checks: reading is deterministic and yields examples; encoding gives rows no longer than
asked, each mapped back to an example and every example to a row, labels with the rows when the
examples have them; the head's width; the model of a backend (a fresh BERT with the type's head)
gives one output row per encoded row; evaluation names the task's metrics first, in order, then
any details keyed "<metric>/<detail>", all finite floats; writing predictions writes one per example, atomically (nothing else is left in
the folder); the default losses it names are registered loss kinds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from distill_engine.bert import BertConfig
from distill_engine.data import WordPieceTokenizer, batch_order
from distill_engine.data.tokenizer import check_vocab
from distill_engine.device import Device
from distill_engine.graph.taps import HEAD_LOGITS, per_position_logits
from distill_engine.losses import loss_definitions
from distill_engine.models.registry import init_parameters
from distill_engine.plugins import get_backend
from distill_engine.tasks.registry import get_task_type, task_type_of

PHASE_KINDS = ("teacher_finetune", "general_distill", "task_distill_intermediate", "task_distill_prediction")


def check_task_type(type_name: str, task, path: Path, backend_name: str, vocab: Path, max_seq_length: int = 16,
                    batch_size: int = 8) -> dict[str, float]:
    """Run the checks; return the metrics of the fresh model (for the caller's own assertions)."""
    task_type = get_task_type(type_name)
    assert task_type_of(task) is task_type, f"{type(task).__name__} is not task type {type_name}'s definition"
    examples = task_type.read(Path(path), task)
    assert len(examples) > 0, f"{path}: read no examples"
    assert len(task_type.read(Path(path), task)) == len(examples), "reading the same file twice differs"
    assert examples.labels is not None, f"{path}: the checks need a labelled file"

    data = task_type.encode(examples, WordPieceTokenizer(vocab), max_seq_length)
    assert data.max_length <= max_seq_length, f"rows of {data.max_length} pieces, more than {max_seq_length}"
    rows = data.examples_of_rows
    assert np.all(np.diff(rows) >= 0) and set(rows.tolist()) == set(range(len(examples))), \
        "rows must map back to every example, in order"
    assert data.labels is not None, "labelled examples encoded into rows without labels"

    width = task_type.num_outputs(task)
    assert isinstance(width, int) and width > 0, f"num_outputs {width!r}"
    for kind in PHASE_KINDS:
        losses = task_type.default_losses(task, kind)
        unknown = [k for k in (losses or ()) if k not in loss_definitions()]
        assert not unknown, f"default_losses({kind}) names unregistered loss kinds {unknown}"

    assert task_type.head in HEAD_LOGITS, f"head {task_type.head!r}"
    config = BertConfig(vocab_size=check_vocab(vocab), hidden_size=8,
                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                        max_position_embeddings=max(max_seq_length, 16), num_labels=width, head=task_type.head)
    model = get_backend(backend_name).load_model(config, init_parameters(config, 0), Device("cpu"))
    # the outputs as the runner keeps them (Runner.predict_split): a row per encoded row, and a
    # position axis of the split's full length for a per-position head
    positions = (data.max_length,) if per_position_logits(task_type.head) else ()
    outputs = np.zeros((len(data), *positions, width), np.float32)
    for batch_rows in batch_order(data, batch_size, shuffle=False, seed=0):
        outputs[batch_rows] = model.predict(data.batch(batch_rows))
    assert np.all(np.isfinite(outputs)), f"{backend_name}: non-finite outputs"

    metrics = task_type.evaluate(task, outputs, data, examples)
    # the task's metrics first, in order; details may follow, each keyed "<metric>/<detail>" (a
    # token task's per entity type)
    assert list(metrics)[:len(task.metrics)] == list(task.metrics), \
        f"evaluate returned {list(metrics)}, the task names {list(task.metrics)}"
    extra = list(metrics)[len(task.metrics):]
    assert all("/" in k for k in extra), f"evaluate's details {extra} must be keyed <metric>/<detail>"
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values()), metrics

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "predictions"
        written = task_type.write_predictions(task, Path(path), outputs, data, out)
        assert written == len(examples), f"wrote {written} predictions for {len(examples)} examples"
        assert out.is_file() and os.listdir(folder) == ["predictions"], \
            f"write_predictions left {sorted(os.listdir(folder))} (an atomic write leaves only its file)"
    return metrics
