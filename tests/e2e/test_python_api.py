"""The Python API: `distill_engine.run` with overrides on a tiny recipe (a path or a Recipe),
`distill_engine.load(...).predict`, and `distill_engine.phase_losses` against the numpy reference."""

import json

import numpy as np
import pytest

import distill_engine
from distill_engine import reference
from distill_engine.checkpoint import load_neutral
from distill_engine.errors import DataError, DistillError, RecipeError
from distill_engine.graph import build_graph, build_mapping
from distill_engine.graph.losses import LossRequest
from distill_engine.recipe import load_recipe
from distill_engine.testing.fixtures import write_tiny_recipe

pytest.importorskip("distill_engine_torch")

FAST = {"phases.teacher.epochs": 1, "phases.gd.max_steps": 1, "phases.td1.max_steps": 2, "phases.td2.epochs": 1,
        "phases.td2.eval_every": 0, "data.batching": "fixed"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("apirun")
    recipe = write_tiny_recipe(root)
    summary = distill_engine.run(recipe, backend="torch", overrides=FAST, output_dir=root / "out")
    return root, summary


def test_run_returns_the_summary_with_overrides_applied(run_dir):
    root, summary = run_dir
    assert summary == json.loads((root / "out" / "summary.json").read_text())
    assert [s["phase"] for s in summary] == ["teacher", "gd", "td1", "td2", "eval"]
    assert [s["steps"] for s in summary[:3]] == [8, 1, 2]  # 64 rows / batch 8, one epoch; max_steps
    recipe = json.loads((root / "out" / "recipe.json").read_text())["recipe"]
    assert recipe["data"]["batching"] == "fixed" and recipe["run"]["output_dir"] == str(root / "out")
    # the same run again: refused without resume/overwrite; resume says it is finished
    with pytest.raises(DistillError, match="holds another run"):
        distill_engine.run(root / "recipe.toml", overrides=FAST, output_dir=root / "out")
    assert distill_engine.run(root / "recipe.toml", overrides=FAST, output_dir=root / "out", resume=True) == summary


def test_run_takes_a_built_recipe(tmp_path):
    recipe = load_recipe(write_tiny_recipe(tmp_path))
    overrides = {**FAST, "phases.teacher.max_steps": 2, "phases.td2.max_steps": 1, "phases.td1.max_steps": 1,
                 "phases.gd.optimizer": {"lr": 1e-3, "betas": [0.9, 0.98]}}
    summary = distill_engine.run(recipe, overrides=overrides, output_dir=tmp_path / "o2", overwrite=True)
    assert [s["steps"] for s in summary] == [2, 1, 1, 1, 0]
    saved = json.loads((tmp_path / "o2" / "recipe.json").read_text())["recipe"]
    assert saved["phases"][1]["optimizer"]["betas"] == [0.9, 0.98]
    with pytest.raises(RecipeError, match="no item \"nope\""):
        distill_engine.run(recipe, overrides={"phases.nope.epochs": 1})


def test_load_and_predict(run_dir):
    root, _ = run_dir
    model = distill_engine.load(root / "out" / "td2" / "final")
    assert model.backend == "torch" and model.config.num_labels == 2 and model.labels == ("0", "1")
    assert model.task.name == "sst2" and model.max_seq_length == 12
    texts = ["good movie", "an awful dull plot", "the film was fine"]
    predictions = model.predict(texts)
    assert len(predictions) == 3
    logits = model.model.predict(model.encode(texts).batch(np.arange(3)))  # the raw backend Model
    for p, row in zip(predictions, logits):
        assert p.label == model.labels[int(np.argmax(row))]
        assert abs(sum(p.probabilities.values()) - 1) < 1e-9
    alone = model.predict("good movie")[0]  # a batch of its own: the same up to float32 rounding
    assert alone.label == predictions[0].label
    assert alone.probabilities == pytest.approx(predictions[0].probabilities, abs=1e-6)
    assert model.last_speed["sentences"] == 1 and model.last_speed["sentences_per_s"] > 0


def _reference(teacher_path, student_path, requests, mapping, texts, labels=None):
    t, s = load_neutral(teacher_path), load_neutral(student_path)
    graph = build_graph(requests, s.config, t.config, mapping, where="test")
    from distill_engine.data import WordPieceTokenizer

    data = WordPieceTokenizer(t.vocab).encode(texts, None, t.manifest["data"]["max_seq_length"])
    batch = data.batch(np.arange(len(texts)))
    if labels is not None:
        batch["labels"] = np.asarray(labels, np.int32)
    return reference.losses(graph, s.config, s.state, t.config, t.state, batch)


@pytest.mark.parametrize("kind", ["task_distill_intermediate", "task_distill_prediction", "custom"])
def test_phase_losses_equal_the_reference(run_dir, kind):
    root, _ = run_dir
    teacher, student = root / "out" / "teacher" / "final", root / "out" / "td2" / "final"
    texts = ["good movie", "an awful dull plot and a bad actor", "the film was fine"]
    mapping = build_mapping("uniform", 2, 4)
    if kind == "custom":
        losses = ["hidden_mse", {"kind": "kl_divergence", "temperature": 2.0, "weight": 0.5},
                  {"kind": "cosine_hidden", "mapping": {"strategy": "last"}}, "hard_cross_entropy"]
        requests = [LossRequest("hidden_mse"), LossRequest("kl_divergence", 0.5, {"temperature": 2.0}),
                    LossRequest("cosine_hidden", mapping=build_mapping("last", 2, 4)), LossRequest("hard_cross_entropy")]
        got = distill_engine.phase_losses(teacher, student, texts, losses=losses, labels=[1, 0, 1])
        want = _reference(teacher, student, requests, mapping, texts, labels=[1, 0, 1])
    else:
        from distill_engine.planning import DEFAULT_LOSSES

        got = distill_engine.phase_losses(teacher, student, texts, kind=kind)
        want = _reference(teacher, student, [LossRequest(k) for k in DEFAULT_LOSSES[kind]], mapping, texts)
    assert set(got) == set(want)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-6), name


def test_phase_losses_takes_loaded_models_and_says_what_is_missing(run_dir):
    root, _ = run_dir
    teacher = distill_engine.load(root / "out" / "teacher" / "final")
    student = distill_engine.load(root / "out" / "td1" / "final")
    out = distill_engine.phase_losses(teacher, student, ["good movie"], mapping={"strategy": "explicit",
                                                                                 "layers": [1, 3]})
    assert set(out) == {"attention_mse", "embedding_mse", "hidden_mse", "total"}
    with pytest.raises(DataError, match="labels: hard_cross_entropy"):
        distill_engine.phase_losses(teacher, student, ["good movie"], losses=["hard_cross_entropy"])
    with pytest.raises(RecipeError, match='kind "evaluate"'):
        distill_engine.phase_losses(teacher, student, ["good movie"], kind="evaluate")


@pytest.mark.parametrize("value", ["plain", 'q"uote\\ \n\t\x7f é 🙂', 3, -2.5, float("inf"), True,
                                   [1, "a", [False]], {"lr": 1e-3, "betas": [0.9, 0.98], "a b": {"c": "d"}}])
def test_overrides_are_written_as_the_toml_they_mean(value):
    import tomllib

    from distill_engine.api import toml_value

    assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value
