"""Neutral checkpoints (atomic, bit-for-bit) and Hugging Face import, without executing pickles."""

import json
import os

import numpy as np
import pytest

from distill_engine.bert import init_parameters, parameter_shapes
from distill_engine.checkpoint import check_tensors, load_any, load_huggingface, load_neutral, save_checkpoint
from distill_engine.errors import CheckpointError
from distill_engine.testing.fixtures import tiny_config, write_hf_bert

from conftest import shared_path


def test_round_trip_is_bit_for_bit(tmp_path):
    config = tiny_config(num_labels=2, projection="shared", projection_dim=24)
    state = init_parameters(config, 3)
    save_checkpoint(tmp_path / "ck", config, state, phase="td1", step=7)
    back = load_neutral(tmp_path / "ck")
    assert back.config == config and back.manifest["step"] == 7 and back.manifest["phase"] == "td1"
    assert set(back.state) == set(state)
    assert all(np.array_equal(back.state[k], state[k]) for k in state)


def test_a_failed_write_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    config = tiny_config()
    old = init_parameters(config, 1)
    save_checkpoint(tmp_path / "ck", config, old, step=1)
    import distill_engine.checkpoint as ckpt

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ck", config, init_parameters(config, 2), step=2)
    back = load_neutral(tmp_path / "ck")
    assert back.manifest["step"] == 1
    assert np.array_equal(back.state["pooler.dense.weight"], old["pooler.dense.weight"])
    assert sorted(os.listdir(tmp_path)) == ["ck"]  # no temporary left behind


def test_hf_import_strips_prefix_and_buffers(tmp_path):
    config = tiny_config()
    write_hf_bert(tmp_path / "hf", config, seed=5)
    ck = load_huggingface(tmp_path / "hf")
    assert ck.config.num_hidden_layers == 4 and ck.vocab.name == "vocab.txt"
    assert set(ck.state) == set(parameter_shapes(config))
    assert np.array_equal(ck.state["embeddings.word_embeddings.weight"],
                          init_parameters(config, 5)["embeddings.word_embeddings.weight"])


def test_missing_and_extra_tensors_are_named(tmp_path):
    config = tiny_config()
    state = init_parameters(config, 0)
    state.pop("encoder.layer.1.output.dense.bias")
    state["encoder.layer.9.output.dense.bias"] = np.zeros(16, np.float32)
    with pytest.raises(CheckpointError) as info:
        check_tensors(config, state, "somewhere")
    msg = str(info.value)
    assert "missing tensors: encoder.layer.1.output.dense.bias" in msg
    assert "unexpected tensors: encoder.layer.9.output.dense.bias" in msg
    # a fresh head may be missing
    no_head = init_parameters(config, 0)
    assert check_tensors(tiny_config(num_labels=2), no_head, "x", allow_missing=("classifier.",)) == [
        "classifier.weight", "classifier.bias"]


def test_bad_directories(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_any(tmp_path / "nope", "neutral")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_huggingface(tmp_path / "empty")
    with pytest.raises(CheckpointError, match='set format = "huggingface"'):
        load_neutral(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(json.dumps(tiny_config().to_hf_config()))
    (tmp_path / "empty" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        load_huggingface(tmp_path / "empty")


@pytest.mark.realdata
def test_minilm_teacher_imports_completely():
    ck = load_huggingface(shared_path("models", "all-MiniLM-L6-v2"))
    c = ck.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (6, 384, 12, 1536)
    assert check_tensors(c, ck.state, "minilm") == []
    assert sum(v.size for v in ck.state.values()) == 22_713_216


def test_foreign_formats_come_from_the_load_foreign_checkpoint_hook(tmp_path, register_plugin):
    from distill_engine.checkpoint import Checkpoint
    from distill_engine.hookspecs import hookimpl

    config = tiny_config()

    class Foreign:
        @hookimpl
        def load_foreign_checkpoint(self, path, fmt):
            if fmt != "testfmt":
                return None
            return Checkpoint(config, init_parameters(config, 0), {"imported_from": str(path)})

    with pytest.raises(CheckpointError, match='no installed plugin reads checkpoint format "testfmt"'):
        load_any(tmp_path / "x.ckpt", "testfmt")
    register_plugin(Foreign(), name="foreign")
    ck = load_any(tmp_path / "x.ckpt", "testfmt")
    assert ck.manifest["imported_from"].endswith("x.ckpt") and ck.config == config
