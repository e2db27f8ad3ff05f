"""Kill a run anywhere, resume it, and end with exactly the uninterrupted run's weights and losses.

Each run is a real `distill-engine run` process on the tiny fixtures; `kill_at.py` injects a
SIGKILL (or SIGTERM) at a chosen point: mid-phase after a step, inside a run-state write, between
the renames of a checkpoint swap, between phases (before and after the phase-end state). torch
runs with dropout on (its RNG state is saved); MindSpore with dropout off (its Dropout kernel's
RNG cannot be saved: see distill_engine_mindspore.trainer).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from distill_engine.testing.fixtures import write_tiny_recipe

HERE = Path(__file__).resolve().parent
PHASES = ("teacher", "gd", "td1", "td2")


def _installed(name: str) -> bool:
    from distill_engine.plugins import backend_registry

    return name in backend_registry()


def _run(recipe: Path, backend: str, extra: list[str], kill: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_AT": json.dumps(kill or {"kind": "record", "match": {"event": "never"}})}
    cmd = [sys.executable, str(HERE / "kill_at.py"), "run", str(recipe), "--backend", backend, "--no-progress", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _outcome(run: Path) -> tuple[dict, list]:
    weights = {}
    for phase in PHASES:
        for kept in ("final", "best"):
            path = run / phase / kept / "model.safetensors"
            if path.exists():
                weights[f"{phase}/{kept}"] = load_file(str(path))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return weights, records


def _steps(records: list) -> list:
    """The train and eval records without the fields that are wall-clock dependent."""
    return [{k: v for k, v in r.items() if k not in ("time", "elapsed_s")} for r in records
            if r["event"] in ("train", "eval")]


def _check_same(baseline: Path, resumed: Path, resumes: int) -> None:
    want_w, want_r = _outcome(baseline)
    got_w, got_r = _outcome(resumed)
    assert set(got_w) == set(want_w)
    for key in want_w:
        for name, value in want_w[key].items():
            assert np.array_equal(got_w[key][name], value), f"{key}: {name} differs from the uninterrupted run"
    assert _steps(got_r) == _steps(want_r), "logged losses differ from the uninterrupted run (or a step repeats)"
    keys = [(r["event"], r["phase"], r["step"]) for r in got_r if r["event"] in ("train", "eval")]
    assert len(keys) == len(set(keys)), "a step record is duplicated"
    assert sum(r["event"] == "resume" for r in got_r) == resumes
    assert all("time" in r for r in got_r)
    assert json.loads((resumed / "run.json").read_text())["status"] == "finished"


# Kill points, one process each, in the order the run meets them (counts are per process).
TORCH_KILLS = [
    {"kind": "record", "match": {"event": "train", "phase": "teacher", "step": 5}},  # mid-phase
    {"kind": "state_write", "n": 2},  # inside the second state this process writes (teacher step 8)
    {"kind": "signal", "match": {"event": "train", "phase": "teacher", "step": 11}},  # SIGTERM: clean stop
    {"kind": "record", "match": {"event": "phase_end", "phase": "gd"}},  # between phases, before the end state
    {"kind": "record", "match": {"event": "state", "phase": "td1", "step": None}},  # after td1's end state
    {"kind": "record", "match": {"event": "eval", "phase": "td2", "step": 4}},  # after an eval, before its state
    {"kind": "swap", "name": "best"},  # between the renames replacing td2/best with the final weights
]


@pytest.mark.skipif(not _installed("torch"), reason="backend torch not installed")
def test_torch_sigkill_anywhere_then_resume_is_bit_identical_with_dropout(tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    common = ["--set", "run.checkpoint_every=2", "--set", "student.dropout=0.1",
              "--set", "student.attention_dropout=0.1", "--set", "teacher.dropout=0.1",
              "--set", "teacher.attention_dropout=0.1"]
    baseline = tmp_path / "baseline"
    done = _run(recipe, "torch", [*common, "--output-dir", str(baseline)])
    assert done.returncode == 0, done.stderr

    resumed = tmp_path / "resumed"
    args = [*common, "--output-dir", str(resumed)]
    for i, kill in enumerate(TORCH_KILLS):
        proc = _run(recipe, "torch", args + (["--resume"] if i else []), kill)
        if kill["kind"] == "signal":
            assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
            last = proc.stderr.strip().splitlines()[-1]
            assert "interrupted by SIGTERM in phase teacher at step 11" in last and "--resume" in last, last
        else:
            assert proc.returncode == -signal.SIGKILL, f"kill point {kill} was never reached: {proc.stderr}"
    final = _run(recipe, "torch", [*args, "--resume"])
    assert final.returncode == 0, final.stderr
    _check_same(baseline, resumed, resumes=len(TORCH_KILLS))
    again = _run(recipe, "torch", [*args, "--resume"])
    assert again.returncode == 0 and "is finished" in again.stdout


@pytest.mark.skipif(not _installed("torch"), reason="backend torch not installed")
@pytest.mark.parametrize("sets", [
    pytest.param(['data.batching="bucketed"', "data.pad_to_multiple_of=4"], id="bucketed"),
])
def test_torch_one_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, sets):
    """Other data options, one kill each: the teacher (8 batches an epoch) is killed at step 11 and
    resumes from its state at step 10, mid-way through epoch 1 (the batch order's start=2)."""
    recipe = write_tiny_recipe(tmp_path, words=(1, 10))
    common = ["--set", "run.checkpoint_every=2", "--set", "teacher.dropout=0.1", "--set", "student.dropout=0.1",
              "--set", "phases.td2.epochs=1", *(x for item in sets for x in ("--set", item))]
    baseline = tmp_path / "baseline"
    done = _run(recipe, "torch", [*common, "--output-dir", str(baseline)])
    assert done.returncode == 0, done.stderr
    resumed = tmp_path / "resumed"
    args = [*common, "--output-dir", str(resumed)]
    proc = _run(recipe, "torch", args, {"kind": "record", "match": {"event": "train", "phase": "teacher", "step": 11}})
    assert proc.returncode == -signal.SIGKILL, f"the kill point was never reached: {proc.stderr}"
    final = _run(recipe, "torch", [*args, "--resume"])
    assert final.returncode == 0, final.stderr
    _check_same(baseline, resumed, resumes=1)
    ends = [[r for r in _outcome(run)[1] if r["event"] == "phase_end"] for run in (baseline, resumed)]
    assert [{k: v for k, v in r.items() if k != "time"} for r in ends[1]] == \
        [{k: v for k, v in r.items() if k != "time"} for r in ends[0]]  # "shapes" counts the whole phase
    assert ends[0][0]["shapes"] > 1


@pytest.mark.skipif(not _installed("mindspore"), reason="backend mindspore not installed")
def test_mindspore_sigkill_then_resume_is_bit_identical_without_dropout(tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    common = ["--set", "run.checkpoint_every=2", "--set", "teacher.dropout=0", "--set", "teacher.attention_dropout=0",
              "--set", "phases.teacher.epochs=1", "--set", "phases.td2.epochs=1"]
    baseline = tmp_path / "baseline"
    done = _run(recipe, "mindspore", [*common, "--output-dir", str(baseline)])
    assert done.returncode == 0, done.stderr
    resumed = tmp_path / "resumed"
    args = [*common, "--output-dir", str(resumed)]
    kills = [{"kind": "record", "match": {"event": "train", "phase": "teacher", "step": 5}},
             {"kind": "state_write", "n": 3},  # inside a gd state
             {"kind": "record", "match": {"event": "train", "phase": "td2", "step": 3}}]
    for i, kill in enumerate(kills):
        proc = _run(recipe, "mindspore", args + (["--resume"] if i else []), kill)
        assert proc.returncode == -signal.SIGKILL, f"kill point {kill} was never reached: {proc.stderr}"
    final = _run(recipe, "mindspore", [*args, "--resume"])
    assert final.returncode == 0, final.stderr
    _check_same(baseline, resumed, resumes=len(kills))
