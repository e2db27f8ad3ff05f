"""The encoder families beyond BERT (RoBERTa, XLM-R, DistilBERT, ELECTRA): tiny random models built
with transformers' own config classes and saved with `save_pretrained` load in the engine, whose
taps and logits equal transformers' on the numpy reference, torch and MindSpore (within 1e-5); their
Hugging Face names and config.json go back to transformers' classes; a config.json of an unknown
model_type is refused in one line. (The family conformance checks run over every installed family
in tests/test_models.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import backend_installed
from distill_engine.checkpoint import load_huggingface
from distill_engine.device import Device
from distill_engine.errors import CheckpointError
from distill_engine.losses.builtin import softmax
from distill_engine.models.registry import family_of
from distill_engine.plugins import get_backend
from family_models import FAMILIES, padded_batch, save_tiny, transformers_outputs

pytest.importorskip("transformers")

BACKENDS = ["numpy"] + [pytest.param(b, marks=pytest.mark.skipif(not backend_installed(b), reason=f"{b} not installed"))
                        for b in ("torch", "mindspore")]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """{family: (directory, transformers' outputs on its padded batch, the batch)}, built once."""
    out = {}
    for family in FAMILIES:
        directory = save_tiny(family, tmp_path_factory.mktemp(family))
        pad = json.loads((directory / "config.json").read_text())["pad_token_id"]
        batch = padded_batch(family, pad)
        out[family] = (directory, transformers_outputs(directory, batch), batch)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_family_computes_what_transformers_computes_on(backend, saved):
    for family, (directory, expected, batch) in saved.items():
        ckpt = load_huggingface(directory)
        assert family_of(ckpt.config).name == family
        model = get_backend(backend).load_model(ckpt.config, ckpt.state, Device("cpu"))
        taps = model.forward(batch)
        assert len(taps.hidden_states) == len(expected["hidden"]) == 3
        for i, (ours, theirs) in enumerate(zip(taps.hidden_states, expected["hidden"])):
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5, err_msg=f"{family} {backend} hidden {i}")
        for i, (ours, theirs) in enumerate(zip(taps.attention_scores, expected["attention"])):
            # the attention tap is the raw scores; transformers returns their softmax
            np.testing.assert_allclose(softmax(np.asarray(ours, np.float64)), theirs, rtol=0, atol=1e-5,
                                       err_msg=f"{family} {backend} attention {i}")
        np.testing.assert_allclose(taps.logits, expected["logits"], rtol=0, atol=1e-5,
                                   err_msg=f"{family} {backend} logits")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_names_and_config_are_transformers_own(family, saved, tmp_path):
    """The family's Hugging Face names and config.json, written back, load in transformers' class
    with no tensor missing or unexpected (ELECTRA's embeddings projection, DistilBERT's layer names,
    the sequence heads' names)."""
    import transformers
    from safetensors.numpy import save_file

    directory = saved[family][0]
    ckpt = load_huggingface(directory)
    fam = family_of(ckpt.config)
    theirs = set(transformers.AutoModelForSequenceClassification.from_pretrained(directory).state_dict())
    ours = fam.to_hf_names(ckpt.config, ckpt.state)
    assert set(ours) == {n for n in theirs if not n.endswith(("position_ids", "token_type_ids"))}
    config = fam.config_to_hf(ckpt.config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({k: np.ascontiguousarray(v) for k, v in ours.items()}, str(tmp_path / "model.safetensors"))
    again = load_huggingface(tmp_path)
    assert again.config == ckpt.config and sorted(again.state) == sorted(ckpt.state)


def test_a_config_of_an_unknown_model_type_is_refused_in_one_line(tmp_path):
    from distill_engine.cli.main import main
    from distill_engine.testing.fixtures import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path)
    teacher = tmp_path / "gpt"
    teacher.mkdir()
    (teacher / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 16, "n_layer": 2}))
    with pytest.raises(CheckpointError, match=r'model_type "gpt2" is not a registered model family'):
        load_huggingface(teacher)
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["validate", str(recipe), "--backend", "numpy", "--set", f"teacher.path='{teacher}'"])
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1, err.getvalue()
    assert 'model_type "gpt2" is not a registered model family' in lines[0]
    assert "readable here: bert, distilbert, electra, roberta, xlm-roberta" in lines[0]


def test_distilbert_sinusoidal_positions_are_refused(tmp_path):
    directory = save_tiny("distilbert", tmp_path / "d")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "sinusoidal_pos_embds": True}))
    with pytest.raises(CheckpointError, match="sinusoidal_pos_embds = true is not supported by the distilbert"):
        load_huggingface(directory)


def test_a_student_takes_its_teachers_layers(planonly, tmp_path):
    """student.teacher_layers (DistilBERT's every other layer, Patient-KD's first k): the student is
    the teacher's shape with those layers, its tensors the teacher's; a layer the teacher lacks and a
    student.init beside it are refused in one line, before training."""
    from distill_engine.checkpoint import load_huggingface as load
    from distill_engine.errors import FieldError, RecipeError
    from distill_engine.planning import plan
    from distill_engine.recipe import load_recipe
    from distill_engine.testing.fixtures import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path)  # a BERT teacher of 4 layers
    teacher = load(tmp_path / "teacher")
    planned = plan(load_recipe(recipe, ["student.teacher_layers=[2, 4]"]), planonly)
    config, state = planned.student_config, planned.student_init.state
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (2, 16, 32)
    assert planned.student_init.vocab == teacher.vocab
    for student_layer, teacher_layer in ((0, 1), (1, 3)):
        for name in ("attention.self.query.weight", "output.LayerNorm.bias"):
            np.testing.assert_array_equal(state[f"encoder.layer.{student_layer}.{name}"],
                                          teacher.state[f"encoder.layer.{teacher_layer}.{name}"])
    assert not any(k.startswith(("encoder.layer.2.", "classifier.")) for k in state)
    np.testing.assert_array_equal(state["embeddings.word_embeddings.weight"],
                                  teacher.state["embeddings.word_embeddings.weight"])
    with pytest.raises(RecipeError, match=r"^student.teacher_layers: layer 5 is not one of the teacher's 4 layers "
                                          r"\(1..4\)$"):
        plan(load_recipe(recipe, ["student.teacher_layers=[1, 5]"]), planonly)
    with pytest.raises((RecipeError, FieldError), match="student.teacher_layers: the student starts from its "
                                                         "teacher's layers, and student.init names"):
        plan(load_recipe(recipe, ["student.teacher_layers=[1]", f"student.init={tmp_path / 'teacher'}"]), planonly)


@pytest.mark.skipif(not backend_installed("mindspore"), reason="mindspore not installed")
def test_the_mindspore_zoo_export_refuses_another_network(saved, tmp_path, capsys):
    """The MindSpore zoo's names are its BERT's: a DistilBERT would be read as another network."""
    from distill_engine.cli.main import main

    assert main(["export", str(saved["distilbert"][0]), "--to", "mindspore", str(tmp_path / "s.ckpt")]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "is a distilbert model; the MindSpore model zoo's names are BERT's" in err[0], err


def test_the_families_are_listed_with_their_model_types_and_backends(capsys):
    from distill_engine.cli.main import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    backends = ", ".join(b for b in ("mindspore", "torch") if backend_installed(b))
    for family, plugin in (("roberta", "roberta-family"), ("xlm-roberta", "roberta-family"),
                           ("distilbert", "distilbert-family"), ("electra", "electra-family")):
        assert (f"    model_type: {family}; taps: embeddings, hidden, attention, value, pooled, logits; "
                f"from plugin {plugin}; backends: {backends}") in out, out
