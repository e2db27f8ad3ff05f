"""The task-type conformance checks for the example fastText plugin, on both backends (run by
tests/test_task_plugin.py in a process where the plugin is installed; FASTTEXT_FILE and VOCAB name
a labelled file of the task and a vocabulary)."""

import os
from pathlib import Path

import pytest

from distill_engine.testing.task_suite import check_task_type
from distill_engine_fasttext_task import FastTextTask


@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_the_task_type_conforms(backend):
    task = FastTextTask("adjectives", ("neg", "pos"), ("macro_f1", "accuracy"))
    metrics = check_task_type("fasttext", task, Path(os.environ["FASTTEXT_FILE"]), backend, Path(os.environ["VOCAB"]))
    assert 0.0 <= metrics["macro_f1"] <= 1.0
