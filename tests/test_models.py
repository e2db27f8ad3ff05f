"""Model families as plugins: the registry, BERT registered through the same hooks as a plugin's
family, checkpoints read by the family of their config, and the family checks (core tests: no
framework; the backends' half runs where they are installed)."""

from __future__ import annotations

import json

import attrs
import pytest

from conftest import backend_installed
from distill_engine.bert import BertConfig
from distill_engine.checkpoint import load_huggingface, load_neutral, save_checkpoint
from distill_engine.cli.main import main
from distill_engine.errors import BackendError, CheckpointError
from distill_engine.hookspecs import hookimpl
from distill_engine.models.builtin import BertFamily
from distill_engine.models.registry import (MODEL_IMPLEMENTATIONS, build_model, family_of, get_family,
                                            model_families, read_hf_config)
from distill_engine.testing.family_suite import check_forward, check_model_family, check_names_and_configs, student_of
from distill_engine.testing.fixtures import tiny_config, write_hf_bert


@attrs.frozen
class TwinConfig(BertConfig):
    """A family of its own class whose network is BERT's (as the ERNIE example's is)."""


class TwinFamily(BertFamily):
    name = "twin"
    description = "BERT's twin, for tests"
    config_class = TwinConfig
    hf_model_types = ("twin",)

    def config_from_hf(self, data, path):
        return TwinConfig(**attrs.asdict(super().config_from_hf(data, path), recurse=False))

    def config_to_hf(self, config):
        return {**super().config_to_hf(config), "model_type": "twin"}

    def config_from_dict(self, data):
        return TwinConfig(**attrs.asdict(BertConfig.from_dict(data), recurse=False))

    def student_config(self, teacher, **sizes):
        return TwinConfig(**attrs.asdict(super().student_config(teacher, **sizes), recurse=False))


class TwinPlugin:
    @hookimpl
    def register_model_families(self, register):
        register(TwinFamily())

    @hookimpl
    def register_model_implementations(self, register):
        register("twin", "torch", "distill_engine_torch.backend:bert_model")
        register("twin", "mindspore", "distill_engine_mindspore.backend:bert_model")


def _twin(config: BertConfig) -> TwinConfig:
    return TwinConfig(**attrs.asdict(config, recurse=False))


def test_bert_is_the_built_in_family_and_is_listed(capsys):
    assert list(model_families())[0] == "bert"
    assert family_of(tiny_config()) is get_family("bert")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "bert\n    BERT: Hugging Face BertModel" in out and "from plugin builtin-models" in out


def test_the_bert_family_passes_its_own_checks():
    teacher = tiny_config(num_labels=2)
    check_names_and_configs("bert", teacher)
    check_names_and_configs("bert", student_of(teacher, layers=2, hidden_size=8, heads=4, intermediate_size=16,
                                               hidden_act="gelu"))


def test_the_checks_catch_a_family_whose_names_do_not_round_trip(register_plugin):
    class Lossy(TwinFamily):
        def to_hf_names(self, config, state):
            return {k: v for k, v in super().to_hf_names(config, state).items() if "pooler" not in k}

    class Plugin:
        @hookimpl
        def register_model_families(self, register):
            register(Lossy())

    register_plugin(Plugin(), name="lossy")
    with pytest.raises(AssertionError, match=r"from_hf_names\(to_hf_names\(state\)\) names other tensors"):
        check_names_and_configs("twin", _twin(tiny_config()))


def test_a_family_registered_twice_names_both_plugins(register_plugin):
    register_plugin(TwinPlugin(), name="twin-a")
    register_plugin(TwinPlugin(), name="twin-b")
    with pytest.raises(BackendError, match='model family "twin" registered twice'):
        model_families()


def test_an_unknown_model_type_names_the_file_and_the_readable_types(tmp_path):
    path = write_hf_bert(tmp_path / "m") / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_type": "gpt2"}))
    with pytest.raises(CheckpointError) as info:
        load_huggingface(tmp_path / "m")
    assert str(info.value) == (f'{path}: model_type "gpt2" is not a registered model family\'s (readable here: '
                               "bert, distilbert, electra, roberta, xlm-roberta; a model-family plugin adds one)")


def test_checkpoints_of_another_family_load_as_that_family(register_plugin, tmp_path):
    register_plugin(TwinPlugin(), name="twin")
    config = _twin(tiny_config(num_labels=2))
    state = get_family("twin").init_parameters(config, 0)
    save_checkpoint(tmp_path / "ckpt", config, state)
    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    assert manifest["family"] == "twin"
    loaded = load_neutral(tmp_path / "ckpt")
    assert type(loaded.config) is TwinConfig and loaded.config == config
    # a BERT manifest stays as it always was: no "family" key
    save_checkpoint(tmp_path / "bert", tiny_config(), get_family("bert").init_parameters(tiny_config(), 0))
    assert "family" not in json.loads((tmp_path / "bert" / "manifest.json").read_text())
    # and a Hugging Face directory of the family's model_type reads as the family
    hf = write_hf_bert(tmp_path / "hf")
    (hf / "config.json").write_text(json.dumps({**json.loads((hf / "config.json").read_text()), "model_type": "twin"}))
    assert type(read_hf_config(hf / "config.json")) is TwinConfig


def test_a_backend_without_an_implementation_of_the_family_says_which_have_one(register_plugin):
    class NoBackends(TwinPlugin):
        @hookimpl
        def register_model_implementations(self, register):
            register("twin", "mindspore", "distill_engine_mindspore.backend:bert_model")

    register_plugin(NoBackends(), name="twin")
    with pytest.raises(BackendError, match=r'model family "twin" has no implementation for backend "torch" '
                                           r"\(implemented for: mindspore; a model-family plugin adds one"):
        build_model("torch", _twin(tiny_config()), {}, None)
    assert MODEL_IMPLEMENTATIONS.implemented_on("bert") == tuple(
        b for b in ("mindspore", "torch") if backend_installed(b))


@pytest.mark.parametrize("backend", [pytest.param(b, marks=pytest.mark.skipif(not backend_installed(b),
                                                                              reason=f"backend {b} not installed"))
                                     for b in ("torch", "mindspore")])
def test_the_family_checks_pass_for_every_installed_family_and_a_registered_twin_on(backend, register_plugin):
    bert = tiny_config(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_hidden_layers=2,
                       pad_token_id=1)
    for name, family in model_families().items():
        # each family's config of BERT's tiny sizes (its variant fields its own; ELECTRA's embeddings
        # narrower than its layers, so that their projection is checked too)
        teacher = family.config_from_dict({**bert.to_dict(), **({"embedding_size": 8} if name == "electra" else {})})
        student = student_of(teacher, layers=2, hidden_size=8, heads=4, intermediate_size=16, hidden_act="gelu")
        if backend == "mindspore" and name != "bert":
            # every MindSpore graph compiles (~45 s a family for the training steps): the other
            # families on BERT's network differ from it in their forward alone, checked here tap for
            # tap (and against transformers in tests/test_encoder_families.py); their steps on torch
            check_names_and_configs(name, teacher)
            check_forward(name, backend, teacher)
            continue
        check_model_family(name, backend, teacher, student)
    teacher = tiny_config(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    register_plugin(TwinPlugin(), name="twin")
    check_forward("twin", backend, _twin(teacher))  # built through the registry as "twin", tap for tap


def test_a_student_of_another_family_than_its_teacher_is_refused(register_plugin, planonly, tmp_path):
    from distill_engine.errors import RecipeError
    from distill_engine.planning import plan
    from distill_engine.recipe import load_recipe
    from distill_engine.testing.fixtures import write_tiny_recipe

    register_plugin(TwinPlugin(), name="twin")
    recipe = write_tiny_recipe(tmp_path)
    student = _twin(tiny_config(hidden_size=8, num_hidden_layers=2, intermediate_size=16))
    save_checkpoint(tmp_path / "twin_student", student, get_family("twin").init_parameters(student, 0))
    with pytest.raises(RecipeError, match=r"student.init: .*twin_student is a twin model and the teacher a bert "
                                          r"model; a student stays in its teacher's family"):
        plan(load_recipe(recipe, [f"student.init={tmp_path / 'twin_student'}"]), planonly)
