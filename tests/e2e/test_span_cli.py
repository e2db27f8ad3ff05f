"""A reader through the command line (#29): teacher fine-tuning, TD1, TD2 and evaluation of a span
task on a handful of SQuAD-shaped questions with a tiny BERT, on each training backend; contexts
longer than a row are cut into windows, every phase is scored per question with SQuAD's exact match
and F1, and the test predictions come back as SQuAD's JSON {id: answer}. A bad record stops the run
before any training, in one line naming the file and the record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill_engine.cli import main
from distill_engine.testing.fixtures import WORDS, tiny_config, write_hf_bert

from test_pipelines import BACKENDS

ADJECTIVES, FILLER = WORDS[:8], WORDS[8:]


def _squad(n: int, seed: int) -> dict:
    """`n` questions "what is it", each answered by the one adjective in its context of 14..22 words:
    every row is longer than 16 pieces, so every batch keeps its 24 (one shape to compile), and a
    context of more than 17 words takes two windows."""
    rng = np.random.default_rng(seed)
    paragraphs = []
    for i in range(n):
        words = list(rng.choice(FILLER, size=int(rng.integers(14, 23))))
        at = int(rng.integers(len(words)))
        words[at] = str(rng.choice(ADJECTIVES))
        context = " ".join(words)
        start = len(" ".join(words[:at])) + (at > 0)
        paragraphs.append({"context": context, "qas": [
            {"id": f"s{seed}q{i}", "question": "what is it", "answers": [{"text": words[at], "answer_start": start}]}]})
    return {"version": "1.1", "data": [{"title": f"set {seed}", "paragraphs": paragraphs}]}


def _recipe(root, train: dict | None = None):
    write_hf_bert(root / "teacher", tiny_config(max_position_embeddings=32))
    (root / "train.json").write_text(json.dumps(train or _squad(32, 0)))
    (root / "dev.json").write_text(json.dumps(_squad(8, 1)))
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
task = {{ type = "span", name = "tiny-squad", doc_stride = 4, max_query_length = 4 }}
train = "train.json"
dev = "dev.json"
test = "dev.json"
max_seq_length = 24

[[phases]]
name = "teacher"
kind = "teacher_finetune"
max_steps = 16
epochs = 100
batch_size = 16
drop_last = true
optimizer = {{ lr = 3e-3 }}

[[phases]]
name = "td1"
kind = "task_distill_intermediate"
max_steps = 2
batch_size = 16
drop_last = true
mask_padding = true
optimizer = {{ lr = 1e-3 }}

[[phases]]
name = "td2"
kind = "task_distill_prediction"
max_steps = 4
batch_size = 16
drop_last = true
eval_every = 2
mask_padding = true
optimizer = {{ lr = 1e-3 }}

[[phases]]
name = "eval"
kind = "evaluate"
""")
    return recipe


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reader_is_fine_tuned_distilled_and_evaluated_through_the_cli(backend, tmp_path, capsys):
    recipe = _recipe(tmp_path)
    assert main(["validate", str(recipe), "--backend", backend]) == 0
    assert main(["run", str(recipe), "--backend", backend, "--no-progress"]) == 0
    run = tmp_path / "run"
    written = json.loads((run / "recipe.json").read_text())["recipe"]["data"]["task"]
    assert written["type"] == "span" and written["doc_stride"] == 4
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ends = {r["phase"]: r["dev"] for r in records if r.get("event") == "phase_end"}
    assert list(ends) == ["teacher", "td1", "td2", "eval"]
    assert ends["td1"] is None  # TD1 trains no prediction layer: not evaluated
    for phase in ("teacher", "td2", "eval"):
        metrics = ends[phase]
        assert list(metrics)[:2] == ["squad_f1", "exact_match"], metrics
        assert 0.0 <= metrics["exact_match"] <= metrics["squad_f1"] <= 1.0
    assert ends["eval"]["squad_f1"] == ends["td2"].get("best_squad_f1", ends["td2"]["squad_f1"])
    losses = {r["phase"]: r for r in records if r.get("event") == "train"}
    assert "span_cross_entropy" in losses["teacher"] and "span_soft_cross_entropy" in losses["td2"]
    teacher_steps = [r["span_cross_entropy"] for r in records if r.get("event") == "train" and r["phase"] == "teacher"]
    # the teacher learns where answers are (the adjective): its loss falls, it finds most of dev's
    assert np.mean(teacher_steps[-4:]) < np.mean(teacher_steps[:4]) and ends["teacher"]["squad_f1"] >= 0.5, ends
    # the evaluate phase writes data.test's answers in SQuAD's format, one per question
    predictions = json.loads((run / "eval" / "test_predictions.json").read_text())
    dev = _squad(8, 1)
    questions = {qa["id"]: p["context"] for p in dev["data"][0]["paragraphs"] for qa in p["qas"]}
    assert list(predictions) == list(questions)
    assert all(answer in questions[qid] for qid, answer in predictions.items())  # cut from its context


def test_a_bad_record_stops_the_run_in_one_line_before_training(tmp_path, capsys):
    train = _squad(4, 0)
    qa = train["data"][0]["paragraphs"][2]["qas"][0]
    qa["answers"][0]["answer_start"] += 1
    recipe = _recipe(tmp_path, train)
    assert main(["run", str(recipe), "--backend", "torch", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"train.json: data[0] (article \"set 0\"): data[0].paragraphs[2].qas[0]: (question s0q2) answers[0]: the " \
           f"text {qa['answers'][0]['text']!r} is not at answer_start" in err, err
    assert not (tmp_path / "run" / "teacher").exists()
