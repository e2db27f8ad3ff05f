"""Early stopping (`phases[i].early_stopping_patience`): a phase ends when its dev metric has not
improved for N evaluations in a row; the stop is logged, summarised and reported, and a run
interrupted between two evaluations resumes with its count and stops at the same step, with the
same weights, as the uninterrupted run. Tiny fixtures, torch, in process."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from safetensors.numpy import load_file

import distill_engine
from distill_engine.errors import RecipeError
from distill_engine.interrupt import RunInterrupted
from distill_engine.planning import plan
from distill_engine.recipe import load_recipe
from distill_engine.runner import Runner
from distill_engine.testing.fixtures import write_tiny_recipe

pytest.importorskip("distill_engine_torch")

PHASES = """
[[phases]]
name = "teacher"
kind = "teacher_finetune"
epochs = 2
batch_size = 8
optimizer = { lr = 1e-3 }

[[phases]]
name = "td2"
kind = "task_distill_prediction"
epochs = 20
batch_size = 8
eval_every = 1
early_stopping_patience = 3
optimizer = { lr = 1e-3 }
"""
SETTINGS = {"data.batching": "fixed", "run.checkpoint_minutes": 0}


def _recipe(root):
    recipe = write_tiny_recipe(root)
    text = recipe.read_text()
    recipe.write_text(text[:text.index("[[phases]]")] + PHASES)
    return recipe


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _evals(records):
    return [(r["step"], r["accuracy"]) for r in records if r["event"] == "eval" and r["phase"] == "td2"]


def test_a_phase_stops_after_patience_evaluations_without_improvement(tmp_path):
    recipe = _recipe(tmp_path)
    summary = distill_engine.run(recipe, backend="torch", overrides=SETTINGS, output_dir=tmp_path / "run")
    records = _records(tmp_path / "run")
    (stop,) = [r for r in records if r["event"] == "early_stop"]
    assert stop["phase"] == "td2" and stop["patience"] == 3 and stop["total"] == 160
    assert stop["step"] < 160 and summary[1]["steps"] == stop["step"]
    evals = _evals(records)
    # the rule itself, from the log: the best before the last three, and none of them beats it
    assert evals[-1][0] == stop["step"]  # the evaluation that stopped it is the final one (not repeated)
    best_before = max(value for _, value in evals[:-3])
    assert all(value <= best_before for _, value in evals[-3:]) and stop["best"] == best_before
    assert len({step for step, _ in evals}) == len(evals)
    report = (tmp_path / "run" / "report" / "README.md").read_text()
    assert f"Early stopping ended td2 at step {stop['step']} of 160" in report


def test_the_patience_count_survives_a_resume(tmp_path, monkeypatch):
    recipe = _recipe(tmp_path)
    distill_engine.run(recipe, backend="torch", overrides=SETTINGS, output_dir=tmp_path / "whole")
    whole = _records(tmp_path / "whole")
    evals = _evals(whole)
    # interrupt right after the first evaluation that did not improve (its count is 1, not 0)
    best, cut = -1.0, None
    for step, value in evals:
        if value <= best:
            cut = step
            break
        best = value
    assert cut is not None and cut < evals[-1][0]

    original = Runner.log

    def log(self, record):
        original(self, record)
        if record.get("event") == "eval" and record.get("phase") == "td2" and record.get("step") == cut:
            self.stop.signum = signal.SIGTERM  # as the signal handler does: stop after this step

    monkeypatch.setattr(Runner, "log", log)
    with pytest.raises(RunInterrupted):
        distill_engine.run(recipe, backend="torch", overrides=SETTINGS, output_dir=tmp_path / "cut")
    monkeypatch.setattr(Runner, "log", original)
    state = sorted((tmp_path / "cut" / "state").iterdir())[-1]
    assert json.loads((state / "state.json").read_text())["progress"]["early_stopping"]["waited"] == 1
    distill_engine.run(recipe, backend="torch", overrides=SETTINGS, output_dir=tmp_path / "cut", resume=True)

    resumed = _records(tmp_path / "cut")
    stops = [[{k: v for k, v in r.items() if k != "time"} for r in rs if r["event"] == "early_stop"]
             for rs in (whole, resumed)]
    assert stops[0] == stops[1] and len(stops[0]) == 1
    for kept in ("final", "best"):
        a = load_file(str(tmp_path / "whole" / "td2" / kept / "model.safetensors"))
        b = load_file(str(tmp_path / "cut" / "td2" / kept / "model.safetensors"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), kept


@pytest.mark.parametrize("sets, message", [
    (["phases.td2.eval_every=0"], r"phases\[1\] \(td2\).early_stopping_patience: 3 needs eval_every > 0"),
    (['phases.td2.kind="task_distill_intermediate"'],
     r"phases\[1\] \(td2\).early_stopping_patience: a task_distill_intermediate phase does not train the prediction"),
])
def test_patience_where_it_cannot_work_is_refused_before_training(tmp_path, sets, message):
    recipe = _recipe(tmp_path)
    with pytest.raises(RecipeError, match=message):
        plan(load_recipe(recipe, sets), "torch")
