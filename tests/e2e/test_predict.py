"""`distill-engine predict` on a tiny trained run: task files in TSV, CSV and JSONL keep their columns
and gain `prediction` and `p_<label>`; --text prints; a MindSpore-zoo .ckpt and a Hugging Face
directory of the same weights predict the same; GLUE submissions; bad input is one line, exit 2,
before any work; and a real-data predict on SST-2 with the shared MiniLM."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from distill_engine.bert import init_parameters
from distill_engine.checkpoint import load_neutral, save_checkpoint
from distill_engine.cli import main
from distill_engine.plugins import backend_registry
from distill_engine.testing.fixtures import write_tiny_recipe
from conftest import shared_path

pytest.importorskip("distill_engine_torch")
needs_mindspore = pytest.mark.skipif("mindspore" not in backend_registry(), reason="backend mindspore not installed")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SST-2-like run (torch): its directory; td2/best is the student to predict with."""
    root = tmp_path_factory.mktemp("tinyrun")
    recipe = write_tiny_recipe(root)
    assert main(["run", str(recipe), "--backend", "torch", "--no-progress", "--set", "phases.gd.max_steps=1",
                 "--set", "phases.td2.epochs=2"]) == 0
    return root


def _tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def _predict(*args) -> int:
    return main(["predict", *map(str, args)])


def _reference_probabilities(ckpt: Path, texts: list[str]) -> np.ndarray:
    """The softmax of the numpy reference forward of a checkpoint on texts (vocab and length of its run)."""
    from distill_engine import reference
    from distill_engine.data import WordPieceTokenizer

    c = load_neutral(ckpt)
    data = WordPieceTokenizer(c.vocab).encode(texts, None, c.manifest["data"]["max_seq_length"])
    logits = reference.forward(c.config, c.state, data.batch(np.arange(len(data)))).logits
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def test_the_manifest_records_the_task_and_a_tsv_file_keeps_its_columns(trained, tmp_path, capsys):
    ckpt = trained / "run" / "td2" / "best"
    assert load_neutral(ckpt).manifest["data"] == {"task": "sst2", "max_seq_length": 12, "lowercase": True}
    dev = trained / "glue" / "dev.tsv"
    out = tmp_path / "out" / "dev_predictions.tsv"
    assert _predict(ckpt, "--input", dev, "--output", out) == 0  # the task is the recorded one
    captured = capsys.readouterr()
    rows, source = _tsv(out), _tsv(dev)
    assert rows[0] == ["sentence", "label", "prediction", "p_0", "p_1"]
    assert [r[:2] for r in rows] == source and len(rows) == 33
    probs = np.array([[float(r[3]), float(r[4])] for r in rows[1:]])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=2e-6)
    assert [r[2] for r in rows[1:]] == [str(int(p[1] > p[0])) for p in probs]
    np.testing.assert_allclose(probs, _reference_probabilities(ckpt, [r[0] for r in source[1:]]), atol=1e-5)
    # the file's labels are scored, and the speed is printed
    accuracy = np.mean([r[2] == r[1] for r in rows[1:]])
    assert f"accuracy {accuracy:.4f} on its 32 labelled rows" in captured.err
    assert "sentences/s" in captured.err and "ms per batch of 32" in captured.err
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left


def test_csv_and_jsonl_files_keep_their_columns(trained, tmp_path):
    ckpt = trained / "run" / "td2" / "best"
    sentences = [r[0] for r in _tsv(trained / "glue" / "dev.tsv")[1:9]]
    with open(tmp_path / "in.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "review", "summary", "extra"])
        for i, s in enumerate(sentences):
            w.writerow([i, s, f'"{s.split()[0]}", in short', "a,b"])
    task = ('{ name = "reviews", format = "csv", text_a = "review", text_b = "summary", label = "verdict", '
            'labels = ["bad", "good"] }')
    assert _predict(ckpt, "--input", tmp_path / "in.csv", "--output", tmp_path / "out.csv", "--task", task) == 0
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "review", "summary", "extra", "prediction", "p_bad", "p_good"]
    assert [r[:4] for r in rows[1:]] == [[str(i), s, f'"{s.split()[0]}", in short', "a,b"]
                                         for i, s in enumerate(sentences)]
    assert {r[4] for r in rows[1:]} <= {"bad", "good"}

    records = [{"text": s, "meta": {"i": i}} for i, s in enumerate(sentences)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    task = '{ name = "j", format = "jsonl", text_a = "text", label = "y", labels = ["neg", "pos"] }'
    assert _predict(ckpt, "--input", tmp_path / "in.jsonl", "--output", tmp_path / "out.jsonl", "--task", task) == 0
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [{k: g[k] for k in ("text", "meta")} for g in got] == records
    assert all(set(g) == {"text", "meta", "prediction", "p_neg", "p_pos"} for g in got)
    assert all(abs(g["p_neg"] + g["p_pos"] - 1) < 1e-5 for g in got)
    # the same sentences, as sst2 TSV, give the same probabilities
    np.testing.assert_allclose([g["p_pos"] for g in got], _reference_probabilities(ckpt, sentences)[:, 1], atol=1e-5)


def test_text_mode_prints_a_tsv(trained, capsys):
    ckpt = trained / "run" / "td2" / "best"
    assert _predict(ckpt, "--text", "good movie", "--text", "an awful , dull plot") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "text\tprediction\tp_0\tp_1"
    probs = _reference_probabilities(ckpt, ["good movie", "an awful , dull plot"])
    for line, p in zip(lines[1:], probs):
        text, label, p0, p1 = line.split("\t")
        assert label == str(int(p[1] > p[0]))
        np.testing.assert_allclose([float(p0), float(p1)], p, atol=1e-5)


def _same_model_elsewhere(ckpt: Path, root: Path):
    """The student's weights as a Hugging Face directory (no projection: HF has none) and as a
    MindSpore model-zoo TinyBERT .ckpt (zoo names, config.json beside it)."""
    c = load_neutral(ckpt)
    hf = root / "hf"
    hf.mkdir()
    config = c.config
    from safetensors.numpy import save_file

    (hf / "config.json").write_text(json.dumps(config.to_hf_config()))
    save_file({("bert." + k if not k.startswith("classifier") else k): v for k, v in c.state.items()
               if not k.startswith("fit_dense")}, str(hf / "model.safetensors"))
    (hf / "vocab.txt").write_bytes(c.vocab.read_bytes())
    return c, hf


def test_a_hugging_face_directory_predicts_like_the_neutral_checkpoint(trained, tmp_path, capsys):
    ckpt = trained / "run" / "td2" / "best"
    _, hf = _same_model_elsewhere(ckpt, tmp_path)
    # no task recorded: --text works with the head's labels ("0", "1"), a file needs --task
    assert _predict(hf, "--text", "good movie") == 0
    hf_line = capsys.readouterr().out.splitlines()[1]
    assert _predict(ckpt, "--text", "good movie") == 0
    assert capsys.readouterr().out.splitlines()[1] == hf_line
    assert _predict(hf, "--input", trained / "glue" / "dev.tsv", "--output", tmp_path / "o.tsv") == 2
    assert "error: --task: no task is recorded with" in capsys.readouterr().err
    assert _predict(hf, "--format", "huggingface", "--task", "sst2", "--max-seq-length", "12",
                    "--input", trained / "glue" / "dev.tsv", "--output", tmp_path / "o.tsv") == 0
    assert _predict(ckpt, "--input", trained / "glue" / "dev.tsv", "--output", tmp_path / "n.tsv") == 0
    assert (tmp_path / "o.tsv").read_text() == (tmp_path / "n.tsv").read_text()


@needs_mindspore
def test_a_mindspore_zoo_ckpt_is_one_command_on_either_backend(trained, tmp_path, capsys):
    """The seed's use: a zoo TinyBERT fine-tuned on SST-2 (.ckpt + config.json) on SST-2 dev."""
    from distill_engine_mindspore.checkpoint import write_ckpt
    from distill_engine_mindspore.zoo_names import zoo_name

    ckpt = trained / "run" / "td2" / "best"
    c = load_neutral(ckpt)
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    # the zoo's task-distilled student: BertModelCLS{bert: TinyBERT} inside the saving network
    tensors = {zoo_name(k, "bert.bert.tinybert_"): v for k, v in c.state.items()}
    tensors |= {"global_step": np.array([10], np.int32), "learning_rate": np.array(1e-4, np.float32)}
    assert "bert.dense_1.weight" in tensors and "bert.fit_dense.weight" in tensors
    (zoo / "config.json").write_text(json.dumps(c.config.to_hf_config()))
    write_ckpt(zoo / "tinybert_sst2.ckpt", tensors)
    dev = trained / "glue" / "dev.tsv"
    assert _predict(ckpt, "--input", dev, "--output", tmp_path / "neutral.tsv") == 0
    for backend in ("torch", "mindspore"):
        out = tmp_path / f"zoo_{backend}.tsv"
        assert _predict(zoo / "tinybert_sst2.ckpt", "--task", "sst2", "--vocab", c.vocab, "--max-seq-length", "12",
                        "--backend", backend, "--input", dev, "--output", out) == 0
        got, want = _tsv(out), _tsv(tmp_path / "neutral.tsv")
        assert [r[:3] for r in got] == [r[:3] for r in want]
        np.testing.assert_allclose([[float(x) for x in r[3:]] for r in got[1:]],
                                   [[float(x) for x in r[3:]] for r in want[1:]], atol=1e-5)
    assert "(mindspore on cpu;" in capsys.readouterr().err


def test_glue_submission_from_a_test_file(trained, tmp_path, capsys):
    ckpt = trained / "run" / "td2" / "best"
    sentences = [r[0] for r in _tsv(trained / "glue" / "dev.tsv")[1:6]]
    test = tmp_path / "test.tsv"
    test.write_text("index\tsentence\n" + "".join(f"{i}\t{s}\n" for i, s in enumerate(sentences)))
    assert _predict(ckpt, "--input", test, "--glue-submission", tmp_path / "SST-2.tsv",
                    "--output", tmp_path / "full.tsv") == 0
    rows = _tsv(tmp_path / "SST-2.tsv")
    assert rows[0] == ["index", "prediction"]
    full = _tsv(tmp_path / "full.tsv")
    assert rows[1:] == [[str(i), r[2]] for i, r in enumerate(full[1:])]
    assert "accuracy" not in capsys.readouterr().err  # an unlabelled file has no score


@pytest.mark.parametrize("case", ["no input file", "output exists", "missing column", "has a prediction column",
                                  "no index", "wrong label count", "text-b on a single-sentence task",
                                  "no checkpoint", "too long", "input is the output", "no head"])
def test_bad_input_is_one_line_exit_2_before_any_work(trained, tmp_path, capsys, case):
    ckpt = trained / "run" / "td2" / "best"
    dev = trained / "glue" / "dev.tsv"
    out = tmp_path / "out.tsv"
    args, expected = {
        "no input file": (["--input", tmp_path / "nope.tsv", "--output", out], "--input .*nope.tsv: file not found"),
        "output exists": (["--input", dev, "--output", dev.parent / "train.tsv"],
                          "--output .*train.tsv: the file exists; pass --overwrite"),
        "missing column": (["--input", dev, "--output", out, "--task",
                            '{ name = "r", format = "tsv", text_a = "review", labels = ["a", "b"] }'],
                           'no column "review", which task r expects'),
        "has a prediction column": (["--input", "PRED", "--output", out], 'already has a column "prediction"'),
        "no index": (["--input", dev, "--glue-submission", out], '--glue-submission: .*no column "index"'),
        "wrong label count": (["--input", dev, "--output", out, "--task", "mnli"],
                              "--task mnli has 3 outputs, the checkpoint's head .* has 2"),
        "text-b on a single-sentence task": (["--text", "a", "--text-b", "b"],
                                             "--text-b: task sst2 reads one text per example"),
        "no checkpoint": (["--text", "a"], "checkpoint not found"),
        "too long": (["--text", "a", "--max-seq-length", "100"], "--max-seq-length 100 exceeds the model's 32"),
        "input is the output": (["--input", dev, "--output", dev, "--overwrite"], "--output .*: is the input file"),
        "no head": (["--text", "a"], "has no classification head"),
    }[case]
    if case == "has a prediction column":
        (tmp_path / "pred.tsv").write_text("sentence\tprediction\ngood\t1\n")
        args[1] = tmp_path / "pred.tsv"
    target = {"no checkpoint": tmp_path / "missing", "no head": trained / "teacher"}.get(case, ckpt)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert _predict(target, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    import re

    assert re.search(expected, err), err
    assert "sentences/s" not in err  # nothing ran
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_overwrite_replaces_an_output(trained, tmp_path):
    ckpt = trained / "run" / "td2" / "best"
    out = tmp_path / "out.tsv"
    out.write_text("old\n")
    assert _predict(ckpt, "--text", "x", "--output", out) == 2  # --output goes with --input
    assert _predict(ckpt, "--input", trained / "glue" / "dev.tsv", "--output", out, "--overwrite") == 0
    assert out.read_text().startswith("sentence\tlabel\tprediction")


@pytest.mark.realdata
def test_real_sst2_dev_and_test_with_the_minilm(tmp_path, capsys):
    """The shared MiniLM with a fresh 2-label head (a neutral checkpoint) on the first 32 sentences
    of SST-2 dev and test: columns, probabilities against the numpy reference, a GLUE submission."""
    from distill_engine import reference
    from distill_engine.checkpoint import load_huggingface
    from distill_engine.data import WordPieceTokenizer

    minilm = load_huggingface(shared_path("models", "all-MiniLM-L6-v2"))
    import attrs

    config = attrs.evolve(minilm.config, num_labels=2)
    state = {**minilm.state, **init_parameters(config, 3, only={"classifier.weight", "classifier.bias"})}
    ckpt = save_checkpoint(tmp_path / "minilm_head", config, state, vocab=minilm.vocab,
                           data={"task": "sst2", "max_seq_length": 64, "lowercase": True})
    glue = shared_path("data", "glue", "SST-2")
    dev, test = tmp_path / "dev.tsv", tmp_path / "test.tsv"
    for src, dst in ((glue / "dev.tsv", dev), (glue / "test.tsv", test)):
        dst.write_text("".join(src.read_text().splitlines(keepends=True)[:33]))
    assert _predict(ckpt, "--input", dev, "--output", tmp_path / "dev_out.tsv", "--batch-size", "16") == 0
    rows = _tsv(tmp_path / "dev_out.tsv")
    assert rows[0] == ["sentence", "label", "prediction", "p_0", "p_1"] and len(rows) == 33
    assert [r[:2] for r in rows] == _tsv(dev)
    assert "sentences/s" in capsys.readouterr().err
    sentences = [r[0] for r in rows[1:4]]
    data = WordPieceTokenizer(minilm.vocab).encode(sentences, None, 64)
    logits = reference.forward(config, state, data.batch(np.arange(3))).logits
    p = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose([[float(x) for x in r[3:]] for r in rows[1:4]], p / p.sum(-1, keepdims=True),
                               atol=1e-5)
    assert _predict(ckpt, "--input", test, "--glue-submission", tmp_path / "SST-2.tsv") == 0
    sub = _tsv(tmp_path / "SST-2.tsv")
    assert sub[0] == ["index", "prediction"] and [r[0] for r in sub[1:]] == [str(i) for i in range(32)]
    assert {r[1] for r in sub[1:]} <= {"0", "1"}


def test_an_older_checkpoint_falls_back_to_its_runs_recipe(trained, tmp_path, capsys):
    """A checkpoint written before manifests recorded their data: the task, length and casing come
    from the recipe.json of its run (<run>/<phase>/<name>)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained / "run" / "td2", run / "td2")
    shutil.copy(trained / "run" / "recipe.json", run / "recipe.json")
    manifest = json.loads((run / "td2" / "best" / "manifest.json").read_text())
    del manifest["data"]
    (run / "td2" / "best" / "manifest.json").write_text(json.dumps(manifest))
    assert _predict(run / "td2" / "best", "--input", trained / "glue" / "dev.tsv", "--output", tmp_path / "a.tsv") == 0
    assert _predict(trained / "run" / "td2" / "best", "--input", trained / "glue" / "dev.tsv",
                    "--output", tmp_path / "b.tsv") == 0
    assert (tmp_path / "a.tsv").read_text() == (tmp_path / "b.tsv").read_text()


def test_a_run_with_data_test_writes_a_glue_submission(tmp_path, capsys):
    """data.test (GLUE's test files: an index column, no label) is predicted by the run's final
    evaluate phase: <run>/eval/test_predictions.tsv, "index<TAB>prediction" in the file's order."""
    from distill_engine.cli import main
    from distill_engine.testing.fixtures import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path)
    dev = (tmp_path / "glue" / "dev.tsv").read_text().splitlines()[1:]
    test = tmp_path / "glue" / "test.tsv"
    test.write_text("index\tsentence\n" + "".join(f"{100 + i}\t{line.split(chr(9))[0]}\n" for i, line in enumerate(dev)))
    assert main(["run", str(recipe), "--backend", "torch", "--no-progress", "--set", "phases.gd.max_steps=1",
                 "--set", f'data.test="{test}"']) == 0
    lines = (tmp_path / "run" / "eval" / "test_predictions.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == len(dev) + 1
    assert [line.split("\t")[0] for line in lines[1:]] == [str(100 + i) for i in range(len(dev))]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}
    assert "test predictions (32 rows, GLUE submission format)" in capsys.readouterr().out
