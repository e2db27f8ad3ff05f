"""A task-type plugin outside the engine (tests/task_plugin_example: fastText's supervised format and
a macro-F1 metric), installed with pip and found through its entry point: listed by `distill-engine
tasks`, refused bad input with one line naming file:line, and trained and evaluated through the
command line on both backends, as a third party's task type would be."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import pip_install_example, run_command
from distill_engine.testing.fixtures import write_tiny_recipe

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "task_plugin_example"
BIN = Path(sys.executable).parent
TASK = "data.task={type='fasttext', name='adjectives', labels=['neg', 'pos'], metrics=['macro_f1', 'accuracy']}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The example plugin pip-installed into a folder of its own, and the environment that sees it."""
    return pip_install_example(tmp_path_factory.mktemp("site"), EXAMPLE, "distill_engine_fasttext_task")


def _run(argv, env, timeout=900):
    return run_command(argv, env, ROOT, timeout)


def _as_fasttext(tsv: Path) -> Path:
    """An SST-2-like TSV (sentence, 0/1) rewritten in fastText's format beside it."""
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    out = tsv.with_suffix(".ft")
    out.write_text("".join(f"__label__{'pos' if label == '1' else 'neg'} {text}\n" for text, label in rows))
    return out


def _recipe(tmp_path: Path) -> tuple[Path, list[str]]:
    recipe = write_tiny_recipe(tmp_path)
    train, dev = (_as_fasttext(tmp_path / "glue" / f"{split}.tsv") for split in ("train", "dev"))
    return recipe, ["--set", TASK, "--set", f"data.train='{train}'", "--set", f"data.dev='{dev}'",
                    "--set", f"data.test='{dev}'"]


def test_the_task_type_and_its_metric_are_listed(installed):
    done = _run([str(BIN / "distill-engine"), "tasks"], installed)
    assert done.returncode == 0, done.stderr
    assert ("fasttext\n    a label per text, in fastText's supervised format (__label__<name> text)\n"
            "    head pooled; presets: none; from plugin fasttext-task") in done.stdout
    assert "macro_f1\n    unweighted mean of the classes' F1; scores classification; from plugin fasttext-task" \
        in done.stdout


def test_a_bad_line_is_one_error_naming_file_and_line(installed, tmp_path):
    recipe, sets = _recipe(tmp_path)
    train = tmp_path / "glue" / "train.ft"
    lines = train.read_text().splitlines()
    lines[2] = "__label__neutral " + lines[2].split(" ", 1)[1]
    train.write_text("\n".join(lines) + "\n")
    done = _run([str(BIN / "distill-engine"), "validate", str(recipe), "--backend", "torch", *sets], installed)
    assert done.returncode != 0
    assert f"data.train: {train}:3: label 'neutral' is not one of task adjectives's (neg, pos)" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_task_type_lists_the_registered_ones(installed, tmp_path):
    recipe, sets = _recipe(tmp_path)
    done = _run([str(BIN / "distill-engine"), "validate", str(recipe), "--backend", "torch",
                 "--set", "data.task={type='fastext', name='x', labels=['a', 'b']}"], installed)
    assert done.returncode != 0
    assert 'data.task.type: unknown task type "fastext" (did you mean "fasttext"?); available: fasttext, sequence, span, token' \
        in done.stderr, done.stderr


@pytest.mark.slow
def test_the_task_type_passes_the_conformance_checks_on_both_backends(installed, tmp_path):
    recipe, _ = _recipe(tmp_path)
    env = {**installed, "FASTTEXT_FILE": str(tmp_path / "glue" / "dev.ft"), "VOCAB": str(tmp_path / "teacher" / "vocab.txt")}
    done = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                 str(EXAMPLE / "check_conformance.py")], env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout, done.stdout[-1000:]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_the_plugins_task_trains_and_evaluates_through_the_command_line(installed, tmp_path, backend):
    recipe, sets = _recipe(tmp_path)
    done = _run([str(BIN / "distill-engine"), "run", str(recipe), "--backend", backend, *sets,
                 "--set", "phases.gd.max_steps=1", "--set", "phases.teacher.epochs=4"], installed)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ends = {r["phase"]: r["dev"] for r in records if r.get("event") == "phase_end"}
    assert set(ends) == {"teacher", "gd", "td1", "td2", "eval"}, ends
    for phase in ("teacher", "td2", "eval"):  # every phase that trains or scores the head, with the task's metrics
        assert list(ends[phase]) == ["macro_f1", "accuracy"], ends
    assert ends["td1"] is None and ends["gd"] is None  # the prediction layer is not trained there: not evaluated
    assert [r for r in records if r.get("event") == "eval" and r["phase"] == "td2" and "macro_f1" in r]
    resolved = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert resolved["recipe"]["data"]["task"]["type"] == "fasttext"
    assert all(0.0 <= ends[p]["macro_f1"] <= 1.0 for p in ("teacher", "td2")), ends
    # the evaluate phase scores the student td2 handed on, and writes data.test in the plugin's format
    assert ends["eval"] == ends["td2"], ends
    written = (tmp_path / "run" / "eval" / "test_predictions.tsv").read_text().splitlines()
    assert len(written) == 32 and all(line in ("__label__neg", "__label__pos") for line in written), written[:3]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_macro_f1_is_the_mean_of_the_per_class_f1(pairs):
    sys.path.insert(0, str(EXAMPLE))
    try:
        from distill_engine_fasttext_task import macro_f1
    finally:
        sys.path.remove(str(EXAMPLE))
    pred, gold = (np.array(x) for x in zip(*pairs))
    classes = sorted(set(pred) | set(gold))
    expected = np.mean([2 * np.sum((pred == c) & (gold == c)) / (np.sum(pred == c) + np.sum(gold == c))
                        for c in classes])
    assert macro_f1(pred, gold) == pytest.approx(expected)
    assert macro_f1(gold, gold) == 1.0
