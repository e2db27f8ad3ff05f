"""A recipe's [augment] table: phases with data = "train_aug" train on data.train augmented,
computed once before the first phase into the cache, reused by the next run, checked by validate."""

import json

import numpy as np
import pytest

from distill_engine.cli import main
from distill_engine.testing.fixtures import WORDS, write_tiny_recipe

pytest.importorskip("distill_engine_torch")


def _glove(path):
    rng = np.random.default_rng(0)
    path.write_text("".join(f"{w} " + " ".join(f"{x:.4f}" for x in rng.normal(size=8)) + "\n" for w in WORDS))
    return path


def _recipe(tmp_path):
    _glove(tmp_path / "glove.txt")
    recipe = write_tiny_recipe(tmp_path, extra=f'''
[augment]
glove = "glove.txt"
n = 3
k = 4
''')
    text = recipe.read_text()
    text = text.replace('[run]\n', f'[run]\ncache_dir = "{tmp_path / "cache"}"\n')
    # td1 and td2 train on the augmented data
    text = text.replace('kind = "task_distill_intermediate"\n', 'kind = "task_distill_intermediate"\ndata = "train_aug"\n')
    text = text.replace('kind = "task_distill_prediction"\n', 'kind = "task_distill_prediction"\ndata = "train_aug"\n')
    recipe.write_text(text)
    return recipe


def test_phases_train_on_the_augmented_training_data(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    assert main(["validate", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "augment        data.train -> " in out and "(N=3, p=0.4, K=4, seed 42, GloVe only): computed before" in out
    assert main(["run", str(recipe), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "[augment] 64 training rows -> " in out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    augmented = next(r for r in records if r["event"] == "augmented")
    manifests = list((tmp_path / "cache" / "augmented").glob("*/train_aug.tsv.manifest.json"))
    assert len(manifests) == 1 and augmented["output"] == str(manifests[0].parent / "train_aug.tsv")
    rows = augmented["output_rows"]
    assert 64 < rows <= 64 * 4
    summary = {s["phase"]: s for s in json.loads((tmp_path / "run" / "summary.json").read_text())}
    assert summary["teacher"]["steps"] == 2 * 8  # data.train: 64 rows, batch 8, 2 epochs
    assert summary["td1"]["steps"] == -(-rows // 8)  # one epoch over the augmented rows
    # another run with the same [augment] reuses the cached file; validate says so
    assert main(["validate", str(recipe), "--set", f'run.output_dir="{tmp_path / "run2"}"']) == 0
    assert "GloVe only): up to date" in capsys.readouterr().out
    # a bad [augment] fails before training
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert main(["run", str(recipe), "--overwrite", "--no-progress", "--set", "augment.glove=nope.txt"]) != 0
    assert "error: augment.glove: " in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before  # nothing touched
    assert main(["validate", str(recipe), "--set", "augment.glove=nope.txt"]) != 0
    assert "word-vector file not found" in capsys.readouterr().err
    assert main(["validate", str(recipe), "--set", 'augment.glove=""']) != 0
    assert "augment.glove is empty, and phases (td1, td2) read data = \"train_aug\"" in capsys.readouterr().err


SHARED = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared"


@pytest.mark.skipif(not (SHARED / "data" / "glove").is_dir(), reason="../shared/data/glove is not beside the checkout")
def test_augmenting_real_sst2_sentences_with_the_shared_glove(tmp_path, capsys):
    lines = (SHARED / "data" / "glue" / "SST-2" / "train.tsv").read_text().splitlines()[:201]
    src = tmp_path / "train.tsv"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "aug.tsv"
    assert main(["augment", str(src), "--task", "sst2", "--glove", str(SHARED / "data/glove/glove.6B.50d.100k.txt"),
                 "--output", str(out), "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "aug.tsv.manifest.json").read_text())
    c = manifest["counts"]
    assert manifest["job"]["n"] == 20 and c["input_rows"] == 200 and c["glove_words"] == c["eligible_words"] > 500
    assert 10 * 200 < c["output_rows"] <= 21 * 200 and c["words_without_candidates"] < c["eligible_words"] / 10
    rows = out.read_text().splitlines()
    assert rows[0] == "sentence\tlabel" and rows[1] == lines[1]  # the header, then the first original
    assert all(len(r.split("\t")) == 2 and r.split("\t")[1] in ("0", "1") for r in rows[1:])
