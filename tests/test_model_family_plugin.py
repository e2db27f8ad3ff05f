"""A model-family plugin outside the engine (tests/family_plugin_example: ERNIE as Hugging Face
writes it), installed with pip and found through its entry point: listed by `distill-engine
models`, conforming on torch and MindSpore (tap for tap against its reference, training steps,
transformers' own ERNIE's logits), and distilled through the command line on both backends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import pip_install_example, run_command
from distill_engine.testing.fixtures import write_tiny_recipe, write_vocab

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "family_plugin_example"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    return pip_install_example(tmp_path_factory.mktemp("site"), EXAMPLE, "distill_engine_ernie_family")


def _run(argv, env, timeout=900):
    return run_command(argv, env, ROOT, timeout)


def test_the_family_is_listed_with_its_backends(installed):
    done = _run([str(BIN / "distill-engine"), "models"], installed)
    assert done.returncode == 0, done.stderr
    assert "bert\n" in done.stdout
    assert ("ernie\n    ERNIE (Hugging Face ErnieModel / ErnieForSequenceClassification, without task-type "
            "embeddings)\n    model_type: ernie; taps: embeddings, hidden, attention, value, pooled, logits; "
            "from plugin ernie-family; backends: mindspore, torch") in done.stdout


@pytest.mark.slow
def test_the_family_conforms_on_both_backends_and_matches_transformers(installed):
    done = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                 str(EXAMPLE / "check_conformance.py")], installed)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout, done.stdout[-1000:]


def _ernie_teacher(directory: Path) -> Path:
    """A tiny ErnieModel saved by transformers, with the tiny recipe's vocabulary."""
    code = (
        "import sys, torch, transformers\n"
        "config = transformers.ErnieConfig(vocab_size=int(sys.argv[2]), hidden_size=16, num_hidden_layers=4,"
        " num_attention_heads=4, intermediate_size=32, max_position_embeddings=32, use_task_id=False)\n"
        "torch.manual_seed(0)\n"
        "transformers.ErnieModel(config).save_pretrained(sys.argv[1])\n")
    vocab = write_vocab(directory.parent / "ernie_vocab.txt")
    size = len(vocab.read_text().split())
    done = subprocess.run([sys.executable, "-c", code, str(directory), str(size)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (directory / "vocab.txt").write_text(vocab.read_text())
    assert json.loads((directory / "config.json").read_text())["model_type"] == "ernie"
    return directory


def test_a_config_with_task_ids_is_refused_in_one_line(installed, tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    teacher = _ernie_teacher(tmp_path / "ernie")
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "use_task_id": True}))
    done = _run([str(BIN / "distill-engine"), "validate", str(recipe), "--backend", "torch",
                 "--set", f"teacher.path='{teacher}'"], installed)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{teacher / 'config.json'}: use_task_id = true (task-type embeddings) is not supported" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_an_ernie_teacher_is_distilled_into_an_ernie_student(installed, tmp_path, backend):
    recipe = write_tiny_recipe(tmp_path)
    teacher = _ernie_teacher(tmp_path / "ernie")
    done = _run([str(BIN / "distill-engine"), "run", str(recipe), "--backend", backend,
                 "--set", f"teacher.path='{teacher}'", "--set", "phases.gd.max_steps=1"], installed)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ends = {r["phase"]: r["dev"] for r in records if r.get("event") == "phase_end"}
    assert set(ends) == {"teacher", "gd", "td1", "td2", "eval"}, ends
    assert 0.0 <= ends["eval"]["accuracy"] <= 1.0 and ends["eval"] == ends["td2"], ends
    # the student is of the teacher's family, and says so in its checkpoint
    manifest = json.loads((tmp_path / "run" / "td2" / "final" / "manifest.json").read_text())
    assert manifest["family"] == "ernie", manifest.get("family")
    teacher_manifest = json.loads((tmp_path / "run" / "teacher" / "final" / "manifest.json").read_text())
    assert teacher_manifest["family"] == "ernie"
