"""The token and span heads against Hugging Face's: a tiny `transformers` BertForTokenClassification
and BertForQuestionAnswering, written with `save_pretrained`, load through
`checkpoint.load_huggingface` and the engine's torch logits equal transformers' (within 1e-5); and
the engine's own token and span models, exported with `distill-engine export --to huggingface`,
load in transformers with the engine's logits."""

from __future__ import annotations

import numpy as np
import pytest

from distill_engine.bert import init_parameters
from distill_engine.checkpoint import load_huggingface, save_checkpoint
from distill_engine.cli import main
from distill_engine.device import Device
from distill_engine.plugins import get_backend
from distill_engine.testing.conformance import assert_close
from distill_engine.testing.fixtures import tiny_config, write_vocab

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

CPU = Device("cpu")
HF_CLASSES = {"token": "BertForTokenClassification", "span": "BertForQuestionAnswering"}


def _batch(vocab_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.array([[1] * 9 + [0] * 3, [1] * 12, [1] * 4 + [0] * 8], np.int64)
    types = np.zeros_like(mask)
    types[:, 5:] = 1
    return {"input_ids": rng.integers(1, vocab_size, mask.shape) * mask, "token_type_ids": types * mask,
            "attention_mask": mask}


def _hf_logits(model, head: str, batch) -> np.ndarray:
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(v) for k, v in batch.items()})
    if head == "span":  # start = [..., 0], end = [..., 1]
        return torch.stack([out.start_logits, out.end_logits], -1).numpy()
    return out.logits.numpy()


@pytest.mark.parametrize("head, labels", [("token", 5), ("span", 2)])
def test_a_hugging_face_model_loads_with_transformers_logits(tmp_path, head, labels):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=32, max_position_embeddings=32, num_labels=labels,
                                     initializer_range=0.2, attn_implementation="eager")
    model = getattr(transformers, HF_CLASSES[head])(config).eval()
    model.save_pretrained(tmp_path)
    ckpt = load_huggingface(tmp_path)
    assert ckpt.config.head == head and ckpt.config.num_labels == labels
    batch = _batch(50)
    got = get_backend("torch").load_model(ckpt.config, ckpt.state, CPU).predict(batch)
    want = _hf_logits(model, head, batch)
    assert got.shape == want.shape == (3, 12, labels)
    assert_close(got, want, f"{head} logits against transformers' {HF_CLASSES[head]}", rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head, labels", [("token", 3), ("span", 2)])
def test_an_engine_model_exports_to_transformers_with_its_logits(tmp_path, capsys, head, labels):
    config = tiny_config(num_labels=labels, head=head, initializer_range=0.2)
    state = init_parameters(config, 5)
    ckpt = save_checkpoint(tmp_path / "student", config, state, vocab=write_vocab(tmp_path / "vocab.txt"))
    out = tmp_path / "hf"
    assert main(["export", str(ckpt), "--to", "huggingface", str(out)]) == 0
    assert f"{labels}-label {head} head" in capsys.readouterr().out
    model = getattr(transformers, HF_CLASSES[head]).from_pretrained(out).eval()
    batch = _batch(config.vocab_size)
    want = get_backend("torch").load_model(config, state, CPU).predict(batch)
    assert_close(_hf_logits(model, head, batch), want, f"transformers' {HF_CLASSES[head]} against the engine's",
                 rtol=1e-5, atol=1e-5)
