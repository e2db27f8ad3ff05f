"""A tagger through the command line (#28): teacher fine-tuning, TD1, TD2 and evaluation of a token
task on a small slice of CoNLL-2003 with a tiny BERT, on each training backend; the tag set is
collected from the training file and written into the run, sentences longer than a row are
windowed, every phase is scored with entity F1 (per type too), and the test predictions come back
as CoNLL lines with a predicted column."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import shared_path
from distill_engine.cli import main
from distill_engine.testing.fixtures import tiny_config, write_hf_bert

from test_pipelines import BACKENDS

TRAIN_SENTENCES, DEV_SENTENCES = 48, 16


def _slice(source, target, sentences: int) -> None:
    """The first `sentences` sentences of a CoNLL file (with its -DOCSTART- lines)."""
    out, seen = [], 0
    for line in source.read_text().split("\n"):
        if not line.strip() and out and out[-1].strip() and not out[-1].startswith("-DOCSTART-"):
            seen += 1
            if seen == sentences:
                break
        out.append(line)
    target.write_text("\n".join(out) + "\n")


def _recipe(root):
    conll = shared_path("data", "conll2003", "train.txt").parent
    vocab = shared_path("models", "all-MiniLM-L6-v2", "vocab.txt")
    teacher = write_hf_bert(root / "teacher", tiny_config(vocab_size=30522))
    shutil.copy(vocab, teacher / "vocab.txt")  # real word pieces for real words
    _slice(conll / "train.txt", root / "train.txt", TRAIN_SENTENCES)
    _slice(conll / "valid.txt", root / "valid.txt", DEV_SENTENCES)
    recipe = root / "recipe.toml"
    recipe.write_text(f"""
[run]
seed = 1
output_dir = "{root / 'run'}"
log_every = 1
eval_batch_size = 16

[teacher]
path = "teacher"

[student]
layers = 2
hidden_size = 8
heads = 4
intermediate_size = 16

[data]
task = {{ type = "token", name = "conll-slice" }}
train = "train.txt"
dev = "valid.txt"
test = "valid.txt"
max_seq_length = 16

[[phases]]
name = "teacher"
kind = "teacher_finetune"
max_steps = 8
batch_size = 16
optimizer = {{ lr = 3e-3 }}

[[phases]]
name = "td1"
kind = "task_distill_intermediate"
max_steps = 2
batch_size = 16
optimizer = {{ lr = 1e-3 }}

[[phases]]
name = "td2"
kind = "task_distill_prediction"
max_steps = 4
batch_size = 16
eval_every = 2
optimizer = {{ lr = 1e-3 }}

[[phases]]
name = "eval"
kind = "evaluate"
""")
    return recipe


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tagger_is_fine_tuned_distilled_and_evaluated_through_the_cli(backend, tmp_path, capsys):
    recipe = _recipe(tmp_path)
    assert main(["validate", str(recipe), "--backend", backend]) == 0
    assert main(["run", str(recipe), "--backend", backend, "--no-progress"]) == 0
    run = tmp_path / "run"
    written = json.loads((run / "recipe.json").read_text())["recipe"]["data"]["task"]
    assert written["type"] == "token"
    assert written["labels"] == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ends = {r["phase"]: r["dev"] for r in records if r.get("event") == "phase_end"}
    assert list(ends) == ["teacher", "td1", "td2", "eval"]
    assert ends["td1"] is None  # TD1 trains no prediction layer: not evaluated
    for phase in ("teacher", "td2", "eval"):
        metrics = ends[phase]
        assert list(metrics)[:4] == ["entity_f1", "entity_precision", "entity_recall", "token_f1"], metrics
        assert all(0.0 <= metrics[k] <= 1.0 for k in list(metrics)[:4])
    # eval scores the student td2 handed on (its best or its final weights)
    assert ends["eval"]["entity_f1"] == ends["td2"].get("best_entity_f1", ends["td2"]["entity_f1"])
    assert "entity_support/PER" in ends["eval"] or "entity_support/LOC" in ends["eval"]
    losses = {r["phase"]: r for r in records if r.get("event") == "train"}
    assert "token_cross_entropy" in losses["teacher"] and "token_soft_cross_entropy" in losses["td2"]
    teacher_steps = [r["token_cross_entropy"] for r in records if r.get("event") == "train" and r["phase"] == "teacher"]
    assert teacher_steps[-1] < teacher_steps[0]  # the teacher learns the tags
    # data.test is labelled here: the evaluate phases score it too
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary[-1]["test"])[:4] == ["entity_f1", "entity_precision", "entity_recall", "token_f1"]
    assert summary[-1]["test"]["entity_f1"] == summary[-1]["dev"]["entity_f1"]  # the same file
    assert "test" not in summary[0]  # training phases score dev only
    predictions = (run / "eval" / "test_predictions.tsv").read_text().split("\n")
    source = (tmp_path / "valid.txt").read_text().split("\n")
    words = [(s, p) for s, p in zip(source, predictions) if s.strip()]
    assert len(predictions) == len(source) and words
    assert all(p.startswith(s.rstrip() + " ") and len(p.split()) == len(s.split()) + 1 for s, p in words)
    report = (run / "report" / "README.md").read_text()
    assert "entity_f1" in report
    # the tag set collected from data.train is the run's: resuming finds the same recipe
    capsys.readouterr()
    assert main(["run", str(recipe), "--backend", backend, "--no-progress", "--resume"]) == 0
    assert "is finished" in capsys.readouterr().out
    # `distill-engine predict` (one label per text) refuses the tagger in one line
    capsys.readouterr()
    assert main(["predict", str(run / "td2" / "final"), "--text", "EU rejects German call", "--backend", backend]) != 0
    err = capsys.readouterr().err
    assert "the model has a token head; predict reads tasks with one label per text" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
