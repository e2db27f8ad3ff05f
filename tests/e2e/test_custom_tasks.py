"""Tasks a recipe defines itself (data.task as a table) train and evaluate end to end: a CSV
sentence-pair task with a header, a header-less TSV, a JSON Lines regression task; and the errors
in such files stop `validate` and `run` before any training."""

import csv
import json

import pytest

from distill_engine.cli import main
from distill_engine.testing.fixtures import write_hf_bert, write_sst2_like

pytest.importorskip("distill_engine_torch")


def _rows(path):
    lines = path.read_text().splitlines()[1:]
    return [line.split("\t") for line in lines]


def _write_task(root, fmt):
    """The tiny SST-2-like data (label learnable from its adjective) rewritten as another task."""
    train, dev = write_sst2_like(root / "sst")
    names = {"train": train, "dev": dev}
    for split, src in names.items():
        rows = _rows(src)
        if fmt == "csv":  # a pair task with a header, quoted fields and verdict names
            with open(root / f"{split}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "review", "summary", "verdict"])
                for i, (s, y) in enumerate(rows):
                    w.writerow([i, s, f'"{s.split()[0]}", in short', ["bad", "good"][int(y)]])
        elif fmt == "tsv":  # header-less, label first
            (root / f"{split}.tsv").write_text("".join(f"{['neg', 'pos'][int(y)]}\t{s}\n" for s, y in rows))
        else:  # JSON Lines regression: a score in [0, 1.2]
            (root / f"{split}.jsonl").write_text("".join(
                json.dumps({"text": s, "score": int(y) + 0.1 * (i % 3)}) + "\n" for i, (s, y) in enumerate(rows)))
    return {
        "csv": '{ name = "reviews", format = "csv", text_a = "review", text_b = "summary", label = "verdict", '
               'labels = ["bad", "good"], metrics = ["accuracy", "f1"] }',
        "tsv": '{ name = "plain", format = "tsv", header = false, text_a = 1, label = 0, labels = ["neg", "pos"] }',
        "jsonl": '{ name = "scores", format = "jsonl", text_a = "text", label = "score" }',
    }[fmt]


def _recipe(root, fmt):
    task = _write_task(root, fmt)
    write_hf_bert(root / "teacher")
    recipe = root / "recipe.toml"
    recipe.write_text(f"""
[run]
seed = 1
output_dir = "{root / 'run'}"
log_every = 1

[teacher]
path = "teacher"

[student]
layers = 2
hidden_size = 8
heads = 4
intermediate_size = 16

[data]
task = {task}
train = "train.{fmt}"
dev = "dev.{fmt}"
max_seq_length = 16

[[phases]]
name = "teacher"
kind = "teacher_finetune"
epochs = 3
batch_size = 8
optimizer = {{ lr = 1e-3 }}

[[phases]]
name = "td2"
kind = "task_distill_prediction"
epochs = 2
batch_size = 8
optimizer = {{ lr = 1e-3 }}

[[phases]]
name = "eval"
kind = "evaluate"
""")
    return recipe


@pytest.mark.parametrize("fmt, metrics", [("csv", {"accuracy", "f1"}), ("tsv", {"accuracy"}),
                                          ("jsonl", {"pearson", "spearman"})])
def test_a_task_of_its_own_trains_and_evaluates(tmp_path, capsys, fmt, metrics):
    recipe = _recipe(tmp_path, fmt)
    assert main(["run", str(recipe), "--backend", "torch", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [s["phase"] for s in summary] == ["teacher", "td2", "eval"]
    assert set(summary[0]["dev"]) == metrics and set(summary[-1]["dev"]) == metrics
    if fmt == "jsonl":  # regression learns slower than the tiny classification tasks: its loss falls
        losses = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        teacher = [r["mse"] for r in losses if r["event"] == "train" and r["phase"] == "teacher"]
        assert sum(teacher[-5:]) < sum(teacher[:5])
        assert all(-1 <= summary[-1]["dev"][m] <= 1 for m in metrics)
    else:
        assert summary[0]["dev"]["accuracy"] > 0.7  # the teacher learnt the (learnable) task
    written = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert written["recipe"]["data"]["task"]["format"] == fmt


def test_errors_in_a_task_file_stop_before_training(tmp_path, capsys):
    recipe = _recipe(tmp_path, "csv")
    dev = tmp_path / "dev.csv"
    dev.write_text(dev.read_text().replace(",good\n", ",great\n", 1))
    assert main(["validate", str(recipe)]) != 0
    err = capsys.readouterr().err
    assert 'error: data.dev: ' in err and 'label "great" is not a reviews label; allowed: bad, good' in err
    assert main(["run", str(recipe), "--no-progress"]) != 0
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    dev.write_text(dev.read_text().replace(",great\n", ",good\n"))
    (tmp_path / "train.csv").write_text("id,text,summary,verdict\n1,a,b,good\n")
    assert main(["validate", str(recipe)]) != 0
    err = capsys.readouterr().err
    assert 'no column "review", which task reviews expects' in err and '"id", "text", "summary", "verdict"' in err
