"""`distill-engine export`, the parts without a framework: Hugging Face directories read back bit for
bit, the refusals (a relu head to Hugging Face, an existing output, bad flags), and the recipe's
classifier_activation fields reaching the planned configs. transformers, onnxruntime and MindSpore
check the files in the backends' tests (test_torch_export.py, test_mindspore_export.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from distill_engine.bert import init_parameters
from distill_engine.checkpoint import load_huggingface, save_checkpoint
from distill_engine.cli import main
from distill_engine.testing.fixtures import tiny_config, write_tiny_recipe, write_vocab
from test_cli_errors import _error  # exit 2, one "error:" line


def _checkpoint(root: Path, name: str, vocab: bool = True, **config) -> Path:
    cfg = tiny_config(**config)
    v = write_vocab(root / "vocab.txt") if vocab else None
    return save_checkpoint(root / name, cfg, init_parameters(cfg, 3), vocab=v)


def test_huggingface_export_reads_back_bit_for_bit_with_tokenizer_files(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "student", num_labels=2, classifier_activation="none", projection="shared",
                       projection_dim=24)
    out = tmp_path / "hf"
    assert main(["export", str(ckpt), "--to", "huggingface", str(out)]) == 0
    assert "73 tensors bit for bit" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "special_tokens_map.json",
                                                     "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["classifier_activation"] == "none"
    assert config["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"}
    names = set(load_file(str(out / "model.safetensors")))
    assert "bert.embeddings.word_embeddings.weight" in names and "classifier.weight" in names
    assert not any("fit_dense" in n for n in names)  # the projection stays out by default
    back = load_huggingface(out)
    src = init_parameters(tiny_config(num_labels=2, projection="shared", projection_dim=24), 3)
    assert set(back.state) == {k for k in src if not k.startswith("fit_dense")}
    assert all(back.state[k].tobytes() == src[k].tobytes() for k in back.state)
    assert back.config.classifier_activation == "none" and back.config.projection == "none"

    with_projection = tmp_path / "hf_proj"
    assert main(["export", str(ckpt), "--to", "huggingface", str(with_projection), "--with-projection"]) == 0
    back = load_huggingface(with_projection)
    assert back.config.projection == "shared"
    assert back.state["fit_dense.weight"].tobytes() == src["fit_dense.weight"].tobytes()


def test_headless_model_exports_as_bert_model(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "gd")
    out = tmp_path / "hf"
    assert main(["export", str(ckpt), "--to", "huggingface", str(out)]) == 0
    assert "no head" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertModel"]
    assert "embeddings.word_embeddings.weight" in load_file(str(out / "model.safetensors"))


def test_relu_head_is_refused_for_huggingface_with_the_reason_and_the_remedies(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "student", num_labels=2, classifier_activation="relu")  # TinyBERT's head
    err = _error(capsys, ["export", str(ckpt), "--to", "huggingface", str(tmp_path / "hf")])
    assert "classifier(relu(pooled))" in err and "BertForSequenceClassification" in err
    assert 'student.classifier_activation = "none"' in err and "--to onnx" in err
    assert not (tmp_path / "hf").exists()


def test_an_existing_output_is_refused_unless_overwrite(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "student", num_labels=2, classifier_activation="none")
    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    err = _error(capsys, ["export", str(ckpt), "--to", "huggingface", str(out)])
    assert err == f"error: --to huggingface {out}: already exists; pass --overwrite to replace it"
    assert (out / "mine.txt").read_text() == "keep"
    assert main(["export", str(ckpt), "--to", "huggingface", str(out), "--overwrite"]) == 0
    assert not (out / "mine.txt").exists() and (out / "config.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--to", "tflite", "x.tflite"], "--to tflite: not an export format; choose from huggingface, onnx, mindspore, "
                                     "mindir"),
    (["--to", "onnx", "{tmp}/model.bin"], "the file name must end in .onnx"),
    (["--to", "mindir", "{tmp}/m.mindir", "--with-projection"], "--with-projection: only --to huggingface or "
                                                                 "mindspore"),
    (["--to", "huggingface", "{tmp}/hf", "--seq-length", "8"], "--seq-length: only the graph formats"),
    (["--to", "huggingface", "{tmp}/hf", "--vocab", "{tmp}/nope.txt"], "--vocab: file not found"),
    (["--to", "huggingface", "{tmp}/hf", "--backend", "torch"], "is written by the engine itself"),
    (["--to", "onnx", "{tmp}/m.onnx", "--backend", "nosuch"], 'nosuch'),
])
def test_bad_flags_give_one_line_before_any_work(tmp_path, capsys, argv, message):
    ckpt = _checkpoint(tmp_path, "student", num_labels=2, classifier_activation="none")
    err = _error(capsys, ["export", str(ckpt), *[a.replace("{tmp}", str(tmp_path)) for a in argv]])
    assert message in err
    assert not [p for p in tmp_path.iterdir() if p.name not in ("student", "vocab.txt")]


def test_missing_checkpoint_vocab_and_format_are_named(tmp_path, capsys):
    err = _error(capsys, ["export", str(tmp_path / "gone"), "--to", "huggingface", str(tmp_path / "hf")])
    assert err == f"error: CHECKPOINT: not found: {tmp_path / 'gone'}"
    (tmp_path / "empty").mkdir()
    err = _error(capsys, ["export", str(tmp_path / "empty"), "--to", "huggingface", str(tmp_path / "hf")])
    assert "pass --format" in err
    ckpt = _checkpoint(tmp_path, "novocab", vocab=False, num_labels=2, classifier_activation="none")
    err = _error(capsys, ["export", str(ckpt), "--to", "huggingface", str(tmp_path / "hf")])
    assert "--vocab:" in err and "has no vocab.txt" in err
    vocab = write_vocab(tmp_path / "v.txt")
    assert main(["export", str(ckpt), "--to", "huggingface", str(tmp_path / "hf"), "--vocab", str(vocab)]) == 0
    err = _error(capsys, ["export", str(ckpt), "--to", "huggingface", str(tmp_path / "hf2"), "--with-projection",
                          "--vocab", str(vocab)])
    assert "--with-projection:" in err and "has no projection" in err


def test_the_recipe_decides_each_head_activation(tmp_path, planonly):
    from distill_engine.errors import RecipeError
    from distill_engine.planning import plan
    from distill_engine.recipe import load_recipe

    recipe = write_tiny_recipe(tmp_path)
    p = plan(load_recipe(recipe), planonly)  # the default: Hugging Face's head, so the student exports there
    assert p.student_config.classifier_activation == "none" and p.teacher_config.classifier_activation == "none"
    relu = ['student.classifier_activation="relu"', 'teacher.classifier_activation="relu"']
    p = plan(load_recipe(recipe, relu), planonly)
    assert p.student_config.classifier_activation == "relu" and p.teacher_config.classifier_activation == "relu"
    # a student whose head states "none" is not silently trained as a relu head
    init = _checkpoint(tmp_path, "init", num_labels=2, classifier_activation="none", hidden_size=8,
                       num_hidden_layers=2, intermediate_size=16, projection="shared", projection_dim=16)
    with pytest.raises(RecipeError, match=r'student.classifier_activation is "relu", but the head of student.init '
                                          r'.* was trained with "none"; set student.classifier_activation = "none"'):
        plan(load_recipe(recipe, [f'student.init="{init}"', *relu]), planonly)
    assert plan(load_recipe(recipe, [f'student.init="{init}"']), planonly).student_config.classifier_activation == "none"


def test_tinybert_original_keeps_tinyberts_relu_head_and_its_fingerprint():
    from distill_engine.fingerprint import math_view
    from distill_engine.recipe import load_recipe, recipe_to_dict

    root = Path(__file__).resolve().parents[1] / "recipes"
    original = recipe_to_dict(load_recipe(root / "tinybert_original.toml"))
    assert original["student"]["classifier_activation"] == "relu"
    assert original["teacher"]["classifier_activation"] == "relu"
    # the default recipes take Hugging Face's head
    for name in ("tinybert_sst2.toml", "quickstart_sst2.toml", "tinybert_sst2_cpu.toml", "minilm_sst2.toml"):
        doc = recipe_to_dict(load_recipe(root / name))
        assert doc["student"]["classifier_activation"] == "none", name
    # what the fingerprint reads of tinybert_original is what it read under the old relu default
    # (the recipe states the old default's value): its runs keep their fingerprint
    flat = math_view(original)
    assert flat["student.classifier_activation"] == flat["teacher.classifier_activation"] == "relu"


@pytest.mark.parametrize("recorded", ["relu", None])  # None: a recipe.json from before the field existed
def test_a_run_started_under_the_relu_default_resumes_as_relu(tmp_path, planonly, recorded):
    """A run started when the default head was TinyBERT's relu head wrote "relu" in its recipe.json
    (or, older still, nothing: the fingerprint's ADDED_FIELDS read that as "relu"). Resumed with the
    same recipe file, which leaves the field unset, it keeps relu: no difference, no refusal."""
    from distill_engine.fingerprint import ADDED_FIELDS, differences
    from distill_engine.planning import plan
    from distill_engine.recipe import load_recipe, recipe_to_dict

    assert ADDED_FIELDS["student.classifier_activation"] == ADDED_FIELDS["teacher.classifier_activation"] == "relu"
    recipe = write_tiny_recipe(tmp_path)
    old = recipe_to_dict(load_recipe(recipe, ['student.classifier_activation="relu"',
                                              'teacher.classifier_activation="relu"']))
    for table in ("student", "teacher"):
        if recorded is None:
            del old[table]["classifier_activation"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "recipe.json").write_text(json.dumps({"backend": "planonly", "recipe": old}))

    notes: list[str] = []
    resumed = load_recipe(recipe, resume=True, notes=notes)
    assert resumed.student.classifier_activation == resumed.teacher.classifier_activation == "relu"
    assert len(notes) == 2 and 'student.classifier_activation is unset; resuming with "relu"' in " ".join(notes)
    assert differences(old, {}, recipe_to_dict(resumed), {}) == []
    assert plan(resumed, planonly).student_config.classifier_activation == "relu"
    # without --resume the recipe is today's: the difference the runner would refuse to resume with
    fresh = recipe_to_dict(load_recipe(recipe))
    assert 'student.classifier_activation ("relu" -> "none")' in differences(old, {}, fresh, {})
    # a value the user writes is theirs: compared with the run's like any other field
    mine = load_recipe(recipe, ['student.classifier_activation="none"'], resume=True)
    assert mine.student.classifier_activation == "none" and mine.teacher.classifier_activation == "relu"
    assert differences(old, {}, recipe_to_dict(mine), {}) == ['student.classifier_activation ("relu" -> "none")']


def test_a_new_run_and_a_resume_of_a_none_run_take_todays_default(tmp_path):
    from distill_engine.recipe import load_recipe, recipe_to_dict

    recipe = write_tiny_recipe(tmp_path)
    notes: list[str] = []
    assert load_recipe(recipe, resume=True, notes=notes).student.classifier_activation == "none" and notes == []
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.json").write_text(json.dumps({"recipe": recipe_to_dict(load_recipe(recipe))}))
    assert load_recipe(recipe, resume=True, notes=notes).student.classifier_activation == "none" and notes == []


def test_graph_shape_flags_are_checked(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "student", num_labels=2)
    err = _error(capsys, ["export", str(ckpt), "--to", "onnx", str(tmp_path / "m.onnx"), "--batch-size", "-1"])
    assert "--batch-size -1: expected a positive whole number" in err
