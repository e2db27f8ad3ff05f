"""Neutral checkpoints (atomic, bit-for-bit) and Hugging Face import, without executing pickles."""

import json
import os

import numpy as np
import pytest

from distill_engine.bert import BertConfig, init_parameters, parameter_shapes, projection_names
from distill_engine.checkpoint import MANIFEST, check_tensors, load_any, load_huggingface, load_neutral, save_checkpoint
from distill_engine.graph import build_graph, build_mapping
from distill_engine.graph.dependencies import used_parameters
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


def test_pad_token_id_travels_in_the_config_and_older_checkpoints_load_with_row_0(tmp_path):
    config = tiny_config(pad_token_id=3)
    save_checkpoint(tmp_path / "ck", config, init_parameters(config, 1))
    assert load_neutral(tmp_path / "ck").config.pad_token_id == 3
    manifest = json.loads((tmp_path / "ck" / MANIFEST).read_text())
    del manifest["config"]["pad_token_id"]  # a checkpoint written before the field existed
    manifest["config"]["some_future_field"] = 1  # and keys this engine does not know are ignored
    (tmp_path / "ck" / MANIFEST).write_text(json.dumps(manifest))
    assert load_neutral(tmp_path / "ck").config == tiny_config()


@pytest.mark.parametrize("written, read", [(5, 5), (None, 0), ("absent", 0)])
def test_pad_token_id_comes_from_a_hugging_face_config(tmp_path, written, read):
    doc = tiny_config().to_hf_config()
    assert doc["pad_token_id"] == 0
    if written == "absent":
        del doc["pad_token_id"]
    else:
        doc["pad_token_id"] = written
    (tmp_path / "config.json").write_text(json.dumps(doc))
    assert BertConfig.from_hf_config(tmp_path / "config.json").pad_token_id == read
    with pytest.raises(CheckpointError, match="pad_token_id 99 is not a row"):
        tiny_config(pad_token_id=99)


def test_the_paper_projection_is_one_w_e_and_one_w_h_under_canonical_names():
    student = tiny_config(hidden_size=8, num_hidden_layers=3, projection="paper", projection_dim=16)
    fit = {k: v for k, v in parameter_shapes(student).items() if k.startswith("fit_dense")}
    assert fit == {"fit_dense.embeddings.weight": (16, 8), "fit_dense.embeddings.bias": (16,),
                   "fit_dense.layers.weight": (16, 8), "fit_dense.layers.bias": (16,)}
    assert projection_names(student, 0) == ("fit_dense.embeddings.weight", "fit_dense.embeddings.bias")
    assert {projection_names(student, e) for e in (1, 2, 3)} == {("fit_dense.layers.weight", "fit_dense.layers.bias")}
    # what each loss trains follows the names: the hidden states' MSE never reaches W_e
    teacher = tiny_config()
    mapping = build_mapping("uniform", 3, 4)
    hidden = used_parameters(student, build_graph([("hidden_mse", 1.0, 1.0)], student, teacher, mapping, where="t"))
    embedding = used_parameters(student, build_graph([("embedding_mse", 1.0, 1.0)], student, teacher, mapping, where="t"))
    assert "fit_dense.layers.weight" in hidden and "fit_dense.embeddings.weight" not in hidden
    assert "fit_dense.embeddings.weight" in embedding and "fit_dense.layers.weight" not in embedding


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
