"""A run started when TinyBERT's relu head was the default (#33 made Hugging Face's the default)
resumes, with the same recipe file, as the relu run it began as: `run --resume` keeps the
recorded head, says so in a note, and finishes with relu heads. Tiny fixtures, torch, in process."""

from __future__ import annotations

import json
import signal

import pytest

from distill_engine.checkpoint import load_neutral
from distill_engine.cli import main
from distill_engine.runner import Runner
from distill_engine.testing.fixtures import write_tiny_recipe

pytest.importorskip("distill_engine_torch")

PHASES = """
[[phases]]
name = "teacher"
kind = "teacher_finetune"
epochs = 1
batch_size = 16

[[phases]]
name = "td2"
kind = "task_distill_prediction"
epochs = 1
batch_size = 16
"""


def test_an_interrupted_relu_run_resumes_as_relu(tmp_path, monkeypatch, capsys):
    recipe = write_tiny_recipe(tmp_path)
    text = recipe.read_text()
    recipe.write_text(text[:text.index("[[phases]]")] + PHASES)
    base = ["run", str(recipe), "--backend", "torch", "--no-progress"]
    # the run as the old default started it: "relu" recorded in its recipe.json (every field is)
    old_default = ["--set", 'student.classifier_activation="relu"', "--set", 'teacher.classifier_activation="relu"']

    original = Runner.log

    def log(self, record):
        original(self, record)
        if record.get("event") == "phase_end" and record.get("phase") == "teacher":
            self.stop.signum = signal.SIGTERM  # interrupted after the teacher (a relu head by then)

    monkeypatch.setattr(Runner, "log", log)
    assert main([*base, *old_default]) == 128 + signal.SIGTERM  # stopped cleanly, its state saved
    monkeypatch.setattr(Runner, "log", original)
    run = tmp_path / "run"
    assert json.loads((run / "recipe.json").read_text())["recipe"]["student"]["classifier_activation"] == "relu"
    capsys.readouterr()

    assert main([*base, "--resume"]) == 0  # the recipe file says nothing of the heads
    err = capsys.readouterr().err
    assert 'note: student.classifier_activation is unset; resuming with "relu"' in err
    assert 'note: teacher.classifier_activation is unset; resuming with "relu"' in err
    assert load_neutral(run / "td2" / "final").config.classifier_activation == "relu"
    assert load_neutral(run / "teacher" / "final").config.classifier_activation == "relu"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    # and the same run directory, started anew, takes today's default
    assert main([*base, "--overwrite"]) == 0
    assert load_neutral(run / "td2" / "final").config.classifier_activation == "none"
