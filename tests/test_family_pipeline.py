"""A teacher of another family than BERT's (DistilBERT on both backends, RoBERTa with its byte-level
BPE and XLM-R with its SentencePiece Unigram on torch), saved by transformers, goes through the command line: teacher fine-tuning, TD1, TD2
and evaluation; the student, of the teacher's family, exports with `export --to huggingface` to a
directory that transformers loads, whose tokenizer gives the engine's ids and whose model gives the
engine's logits (within 1e-5); the ONNX (torch) or MindIR (MindSpore) export runs as the engine does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import backend_installed
from distill_engine.cli.main import main
from distill_engine.testing.fixtures import WORDS, write_tiny_recipe, write_vocab
from family_models import save_tiny

transformers = pytest.importorskip("transformers")
TASK_CLASS = {"distilbert": "DistilBertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"}


def _bpe_vocab(directory: Path, sentences: list[str]) -> int:
    """RoBERTa's tokenizer files (vocab.json, merges.txt) trained on the recipe's sentences; its size."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sentences, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(directory))
    return bpe.get_vocab_size()


def _unigram_vocab(directory: Path, sentences: list[str]) -> int:
    """XLM-R's tokenizer.json: a SentencePiece Unigram trained on the recipe's sentences, as
    transformers' XLMRobertaTokenizer writes it; its size."""
    from tokenizers import SentencePieceUnigramTokenizer

    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(sentences, vocab_size=60, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                unk_token="<unk>")
    pieces = [tuple(p) for p in json.loads(unigram.to_str())["model"]["vocab"]]
    tokenizer = transformers.XLMRobertaTokenizer(vocab=pieces)
    tokenizer.save_pretrained(directory / "saved")
    (directory / "tokenizer.json").write_bytes((directory / "saved" / "tokenizer.json").read_bytes())
    import shutil

    shutil.rmtree(directory / "saved")
    return len(tokenizer)


def _teacher(root: Path, family: str) -> None:
    """The tiny recipe's teacher replaced by a transformers-saved base model of `family`."""
    import shutil

    teacher = root / "teacher"
    shutil.rmtree(teacher)
    teacher.mkdir()
    sentences = [" ".join(WORDS)] * 4 + (root / "glue" / "train.tsv").read_text().splitlines()
    if family == "roberta":
        size = _bpe_vocab(teacher, sentences)
    elif family == "xlm-roberta":
        size = _unigram_vocab(teacher, sentences)
    else:
        size = len(write_vocab(teacher / "vocab.txt").read_text().split())
    files = {p.name: p.read_bytes() for p in teacher.iterdir()}
    save_tiny(family, teacher, task=TASK_CLASS[family], perturb=False, vocab_size=size, max_position_embeddings=40)
    for name, data in files.items():  # (save_pretrained leaves the tokenizer's files alone; kept in any case)
        (teacher / name).write_bytes(data)


@pytest.mark.slow
@pytest.mark.parametrize("family, backend", [
    ("distilbert", "torch"), ("distilbert", "mindspore"), ("roberta", "torch"), ("xlm-roberta", "torch")])
def test_a_family_teacher_is_distilled_and_exported_to_transformers(family, backend, tmp_path, capsys):
    if not backend_installed(backend):
        pytest.skip(f"backend {backend} not installed")
    recipe = write_tiny_recipe(tmp_path)
    _teacher(tmp_path, family)
    assert main(["run", str(recipe), "--backend", backend, "--set", "phases.gd.max_steps=1"]) == 0, \
        capsys.readouterr().err[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ends = {r["phase"]: r["dev"] for r in records if r.get("event") == "phase_end"}
    assert set(ends) == {"teacher", "gd", "td1", "td2", "eval"}, ends
    assert 0.0 <= ends["eval"]["accuracy"] <= 1.0 and ends["eval"] == ends["td2"], ends
    final = tmp_path / "run" / "td2" / "final"
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["family"] == family
    # the export, loaded by transformers: its tokenizer's ids and its logits are the engine's
    out = tmp_path / "hf"
    assert main(["export", str(final), "--to", "huggingface", str(out)]) == 0, capsys.readouterr().err[-3000:]
    from distill_engine.checkpoint import load_neutral
    from distill_engine.models.registry import family_of

    ckpt = load_neutral(final)
    fam = family_of(ckpt.config)
    dev = [line.split("\t")[0] for line in (tmp_path / "glue" / "dev.tsv").read_text().splitlines()[1:]]
    ours = fam.tokenizer(ckpt.vocab, lowercase=True).encode(dev, None, max_length=12)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    theirs = tokenizer(dev, padding="max_length", truncation=True, max_length=12, return_tensors="pt")
    np.testing.assert_array_equal(ours.input_ids, theirs["input_ids"].numpy())
    import torch

    model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(model).__name__ == {"distilbert": "DistilBertForSequenceClassification",
                                    "roberta": "RobertaForSequenceClassification",
                                    "xlm-roberta": "XLMRobertaForSequenceClassification"}[family]
    with torch.no_grad():
        logits = model(input_ids=theirs["input_ids"], attention_mask=theirs["attention_mask"]).logits.numpy()
    batch = {"input_ids": ours.input_ids, "token_type_ids": ours.token_type_ids, "attention_mask": ours.attention_mask}
    expected = fam.reference_forward(ckpt.config, ckpt.state, batch).logits
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)
    # the backend's graph export (ONNX from torch, MindIR from MindSpore), which the export runs and
    # checks against the engine's reference; an ONNX graph has the family's tokenizer files beside it
    target = "onnx" if backend == "torch" else "mindir"
    assert main(["export", str(final), "--to", target, str(tmp_path / "graph" / f"s.{target}")]) == 0, \
        capsys.readouterr().err[-3000:]
    assert "of the engine's numpy reference" in capsys.readouterr().out
    if family == "roberta":
        assert {"vocab.json", "merges.txt", "tokenizer.json"} <= {p.name for p in (tmp_path / "graph").iterdir()}
        # predict through the family's tokenizer
        assert main(["predict", str(final), "--backend", backend, "--text", dev[0]]) == 0
        row = capsys.readouterr().out.splitlines()[1].split("\t")
        assert int(row[1]) == int(np.argmax(expected[0])), row
