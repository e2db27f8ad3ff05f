"""`distill-engine export` into the tools users use next: a student trained by a tiny run loads in
transformers (AutoModelForSequenceClassification + AutoTokenizer, and `pipeline`) with the engine's
logits and probabilities, and an ONNX export runs in onnxruntime on batches of two shapes with the
engine's outputs, its tokenizer's files beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill_engine import reference
from distill_engine.bert import init_parameters
from distill_engine.checkpoint import load_neutral, save_checkpoint
from distill_engine.cli import main
from distill_engine.data.tokenizer import WordPieceTokenizer
from distill_engine.device import Device
from distill_engine.export import OPSET, TOKENIZER_FILES, check_batches, reference_outputs
from distill_engine.plugins import get_backend
from distill_engine.predict import load, softmax
from distill_engine.testing.fixtures import tiny_config, write_tiny_recipe, write_vocab

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

PHASES = """
[[phases]]
name = "teacher"
kind = "teacher_finetune"
epochs = 1
batch_size = 16
eval_every = 0
optimizer = { lr = 1e-3 }

[[phases]]
name = "td2"
kind = "task_distill_prediction"
epochs = 1
batch_size = 16
eval_every = 2
optimizer = { lr = 1e-3 }
"""
TEXTS = ["good movie , not boring", "the plot was very dull and the actor awful", "fun"]


@pytest.fixture(scope="module")
def trained_student(tmp_path_factory) -> Path:
    """td2/best of a tiny teacher + TD2 run with the default heads (Hugging Face's, classifier_activation
    "none": no --set, so a default recipe's student is what goes to transformers)."""
    root = tmp_path_factory.mktemp("run")
    recipe = write_tiny_recipe(root)
    text = recipe.read_text()
    recipe.write_text(text[:text.index("[[phases]]")] + PHASES)
    assert "classifier_activation" not in recipe.read_text()
    assert main(["run", str(recipe), "--backend", "torch", "--no-progress"]) == 0
    return root / "run" / "td2" / "best"


def test_a_trained_student_loads_in_transformers_with_the_engines_logits(trained_student, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export", str(trained_student), "--to", "huggingface", str(out)]) == 0
    assert "bit for bit" in capsys.readouterr().out
    ckpt = load_neutral(trained_student)
    assert ckpt.config.classifier_activation == "none" and ckpt.config.num_labels == 2

    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.id2label == {0: "0", 1: "1"}  # SST-2's labels, from the run's recipe.json
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    engine_tok = WordPieceTokenizer(ckpt.vocab)
    for row, text in zip(enc["input_ids"], TEXTS):  # the same ids as the engine's tokenizer
        ids = engine_tok._tok.encode(text).ids
        assert row[:len(ids)].tolist() == ids and not row[len(ids):].any()
    batch = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad():
        logits = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    expected = reference.forward(ckpt.config, ckpt.state, batch).logits
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)
    backend_logits = get_backend("torch").load_model(ckpt.config, ckpt.state, Device("cpu")).predict(batch)
    np.testing.assert_allclose(logits, backend_logits, rtol=0, atol=1e-5)

    # transformers' pipeline gives the probabilities the engine's `predict` gives, label by label
    classify = transformers.pipeline("text-classification", model=str(out), tokenizer=str(out), device="cpu")
    got = classify(TEXTS, top_k=None)
    engine = load(trained_student, backend="torch").predict(TEXTS)
    for text, scores, prediction in zip(TEXTS, got, engine):
        assert {s["label"]: s["score"] for s in scores} == pytest.approx(prediction.probabilities, abs=1e-5), text
        assert max(scores, key=lambda s: s["score"])["label"] == prediction.label


def test_a_headless_student_loads_as_auto_model(tmp_path):
    cfg = tiny_config(projection="shared", projection_dim=24)
    state = init_parameters(cfg, 2)
    ckpt = save_checkpoint(tmp_path / "gd", cfg, state, vocab=write_vocab(tmp_path / "vocab.txt"))
    assert main(["export", str(ckpt), "--to", "huggingface", str(tmp_path / "hf"), "--with-projection"]) == 0
    model = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()  # the fit_dense tensors are ignored
    assert type(model).__name__ == "BertModel"
    batch = check_batches(cfg)[1]
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
    taps = reference.forward(cfg, state, batch)
    np.testing.assert_allclose(out.last_hidden_state.numpy(), taps.hidden_states[-1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out.pooler_output.numpy(), taps.pooled, rtol=0, atol=1e-5)


@pytest.mark.parametrize("num_labels", [3, 0])
def test_onnx_runs_in_onnxruntime_with_the_engines_outputs(tmp_path, capsys, num_labels):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    cfg = tiny_config(num_labels=num_labels, projection="shared", projection_dim=24,
                      classifier_activation="relu")  # TinyBERT's head: onnx keeps the ReLU
    state = init_parameters(cfg, 4)
    ckpt = save_checkpoint(tmp_path / "student", cfg, state, vocab=write_vocab(tmp_path / "v.txt"))
    out = tmp_path / "graph" / "student.onnx"
    assert main(["export", str(ckpt), "--to", "onnx", str(out)]) == 0
    assert f"opset {OPSET}" in capsys.readouterr().out
    model = onnx.load(str(out))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    names = ["logits"] if num_labels else ["last_hidden_state", "pooler_output"]
    assert [o.name for o in session.get_outputs()] == names
    for b, length in ((1, 5), (4, 17)):  # shapes other than the export's own check
        batch = check_batches(cfg, b, length, seed=b)[0]
        got = dict(zip(names, session.run(names, batch)))
        expected = reference_outputs(cfg, state, batch)
        for name in names:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_onnx_with_a_fixed_shape_refuses_others(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    cfg = tiny_config(num_labels=2)
    ckpt = save_checkpoint(tmp_path / "student", cfg, init_parameters(cfg, 4), vocab=write_vocab(tmp_path / "v.txt"))
    out = tmp_path / "fixed" / "fixed.onnx"
    assert main(["export", str(ckpt), "--to", "onnx", str(out), "--batch-size", "2", "--seq-length", "10"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 10]
    assert json.loads((out.parent / "tokenizer_config.json").read_text())["model_max_length"] == 10
    assert main(["export", str(ckpt), "--to", "onnx", str(tmp_path / "long.onnx"), "--seq-length", "33"]) == 2
    assert "--seq-length 33: the model has 32 positions" in capsys.readouterr().err


def test_onnx_carries_its_tokenizer_and_gives_the_engines_predictions(trained_student, tmp_path, capsys):
    """What an onnxruntime user does with the export alone: tokenize with the files beside the graph
    (the `tokenizers` library, or transformers' AutoTokenizer), run the graph, softmax: the
    engine's `predict` probabilities."""
    ort = pytest.importorskip("onnxruntime")
    from tokenizers import Tokenizer

    out = tmp_path / "onnx" / "student.onnx"
    assert main(["export", str(trained_student), "--to", "onnx", str(out)]) == 0
    assert "tokenizer beside it" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["student.onnx", *TOKENIZER_FILES])
    assert (out.parent / "vocab.txt").read_bytes() == (trained_student / "vocab.txt").read_bytes()

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    engine = load(trained_student, backend="torch").predict(TEXTS)
    tokenizer = Tokenizer.from_file(str(out.parent / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"))
    encodings = tokenizer.encode_batch(TEXTS)
    fast = {"input_ids": np.array([e.ids for e in encodings], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], np.int64)}
    auto = transformers.AutoTokenizer.from_pretrained(out.parent)(TEXTS, padding=True, return_tensors="np")
    for name in fast:  # the two ways of reading the files encode alike
        np.testing.assert_array_equal(fast[name], auto[name].astype(np.int64))
    (logits,) = session.run(["logits"], fast)
    probabilities = softmax(logits)
    for row, prediction in zip(probabilities, engine):
        assert dict(zip(prediction.probabilities, row.tolist())) == pytest.approx(prediction.probabilities, abs=1e-5)
        assert list(prediction.probabilities)[int(row.argmax())] == prediction.label


def test_onnx_tokenizer_files_are_not_replaced_unasked_and_a_vocab_is_needed(tmp_path, capsys):
    cfg = tiny_config(num_labels=2)
    state = init_parameters(cfg, 4)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("mine")
    with_vocab = save_checkpoint(tmp_path / "student", cfg, state, vocab=write_vocab(tmp_path / "v.txt"))
    assert main(["export", str(with_vocab), "--to", "onnx", str(folder / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "already holds tokenizer.json; pass --overwrite" in err
    assert sorted(p.name for p in folder.iterdir()) == ["tokenizer.json"] and (folder / "tokenizer.json").read_text() == "mine"
    assert main(["export", str(with_vocab), "--to", "onnx", str(folder / "m.onnx"), "--overwrite"]) == 0
    assert json.loads((folder / "tokenizer.json").read_text())["model"]["type"] == "WordPiece"

    no_vocab = save_checkpoint(tmp_path / "bare", cfg, state)
    assert main(["export", str(no_vocab), "--to", "onnx", str(tmp_path / "bare.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--vocab:" in err and "has no vocab.txt" in err and "--to onnx writes its tokenizer" in err
    assert not (tmp_path / "bare.onnx").exists()
    assert main(["export", str(no_vocab), "--to", "onnx", str(tmp_path / "bare.onnx"),
                 "--vocab", str(tmp_path / "v.txt")]) == 0
    assert (tmp_path / "vocab.txt").read_bytes() == (tmp_path / "v.txt").read_bytes()
