"""Recipes: the shipped ones load and validate, overrides work, bad input gives one clear error."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distill_engine.errors import RecipeError
from distill_engine.recipe import load_recipe, recipe_to_dict, structure
from distill_engine.recipe.loader import apply_override, parse_value

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["tinybert_sst2.toml", "tinybert_general.toml", "tinybert_original.toml"])
def test_shipped_recipes_load_with_tinybert_defaults(name):
    recipe = load_recipe(ROOT / "recipes" / name)
    s = recipe.student
    assert (s.layers, s.hidden_size, s.intermediate_size, s.heads) == (4, 312, 1200, 12)
    assert Path(recipe.teacher.path).is_absolute()  # resolved against the recipe's folder
    assert recipe.teacher.path.endswith("shared/models/all-MiniLM-L6-v2")


def test_sst2_recipe_phases_follow_the_pipeline():
    recipe = load_recipe(ROOT / "recipes" / "tinybert_sst2.toml")
    assert [p.kind for p in recipe.phases] == ["teacher_finetune", "task_distill_intermediate",
                                               "task_distill_prediction", "evaluate"]
    td1, td2 = recipe.phase("td1"), recipe.phase("td2")
    assert {l.kind for l in td1.losses} == {"attention_mse", "embedding_mse", "hidden_mse"}
    assert (td1.epochs, td1.optimizer.lr, td1.batch_size) == (10, 5e-5, 32)
    assert (td2.epochs, td2.optimizer.lr, td2.eval_every) == (3, 3e-5, 100)
    assert recipe.data.max_seq_length == 64


def test_the_original_recipe_is_the_sst2_pipeline_set_up_as_the_pytorch_original():
    original = load_recipe(ROOT / "recipes" / "tinybert_original.toml")
    sst2 = load_recipe(ROOT / "recipes" / "tinybert_sst2.toml")
    assert [(p.name, p.kind, p.epochs, p.batch_size, p.optimizer.lr, p.schedule) for p in original.phases] == \
        [(p.name, p.kind, p.epochs, p.batch_size, p.optimizer.lr, p.schedule) for p in sst2.phases]
    assert not original.run.train_pad_embedding and original.student.projection == "shared"
    assert (original.data.batching, original.data.padding, original.data.max_seq_length) == ("fixed", "max_length", 64)
    for phase in original.phases[:3]:
        opt = phase.optimizer
        assert (opt.bias_correction, opt.clip, opt.max_grad_norm, opt.eps, opt.weight_decay) == \
            (False, "per_parameter", 1.0, 1e-6, 0.01), phase.name
    for name in ("td1", "td2"):
        assert not original.phase(name).mask_padding and original.phase(name).teacher_cache == "off"


def test_another_student_size_is_a_set_away(tmp_path):
    recipe = load_recipe(ROOT / "recipes" / "tinybert_sst2.toml",
                         ["student.layers=6", "student.hidden_size=768", "student.intermediate_size=3072",
                          "phases.td2.epochs=1", "phases[1].batch_size=16", "run.output_dir=out"], cwd=tmp_path)
    assert (recipe.student.layers, recipe.student.hidden_size) == (6, 768)
    assert recipe.phase("td2").epochs == 1 and recipe.phase("td1").batch_size == 16


def test_set_paths_resolve_against_the_working_directory(tmp_path):
    recipe = load_recipe(ROOT / "recipes" / "tinybert_sst2.toml", ["data.train=mine.tsv"], cwd=tmp_path)
    assert recipe.data.train == str(tmp_path / "mine.tsv")


@pytest.mark.parametrize("override, message", [
    ("phases.td1.epoch=1", 'phases[1].epoch: unknown key (did you mean "epochs"?)'),
    ("studnet.layers=2", 'studnet: unknown key (did you mean "student"?)'),
    ("student.layers=2.5", "student.layers: expected int, got float 2.5"),
    ("student.layers=true", "student.layers: expected int, got bool true"),
    ("phases.td2.losses=[{kind='soft_ce'}]", "phases[2].losses[0].kind: unknown loss \"soft_ce\""),
    ("phases.td9.epochs=1", 'no item "td9" in phases'),
    ("phases.7.epochs=1", "index 7 out of range"),
    ("run.device", "expected KEY=VALUE"),
])
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(ROOT / "recipes" / "tinybert_sst2.toml", [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_recipe_and_bad_toml(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nseed=1")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="at least one"):
        structure({"run": {}})


@given(seed=st.integers(0, 2**31), lr=st.floats(1e-7, 1e-2), layers=st.integers(1, 24),
       clip=st.sampled_from(["global_norm", "per_parameter", "none"]), epochs=st.floats(0.1, 20))
def test_round_trip_and_override_properties(seed, lr, layers, clip, epochs):
    data = {"run": {"seed": seed}, "student": {"layers": layers},
            "phases": [{"name": "a", "kind": "task_distill_intermediate", "epochs": epochs,
                        "optimizer": {"lr": lr, "clip": clip}}]}
    recipe = structure(data)
    assert structure(recipe_to_dict(recipe)) == recipe
    apply_override(data, f"phases.a.optimizer.lr={lr * 2!r}")
    assert structure(data).phases[0].optimizer.lr == pytest.approx(lr * 2)


def test_parse_value_reads_toml_scalars_and_bare_words():
    assert parse_value("3") == 3 and parse_value("2e-5") == 2e-5 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("gpu:0") == "gpu:0"
