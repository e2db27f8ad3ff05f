"""`--max-steps N` / `--max-examples N` (run.max_steps, run.max_examples) make any recipe small, and
`validate` prints each phase's examples, steps and evaluations (a timed estimate with --time-steps)."""

import re

import pytest

from distill_engine.cli import main
from distill_engine.cli.main import _parser
from distill_engine.cli.run import load_plan
from distill_engine.fingerprint import differences
from distill_engine.runner import Runner
from distill_engine.testing.fixtures import write_tiny_recipe

# the tiny recipe: train.tsv 64 examples, dev.tsv 32, gd capped at 3 steps by its own max_steps
SIZE = re.compile(r"^  size +(\S+): (.*)$", re.M)


def _sizes(out: str) -> dict[str, str]:
    return dict(SIZE.findall(out))


def test_validate_prints_every_phase_s_examples_steps_and_evaluations(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    assert main(["validate", str(recipe), "--backend", planonly]) == 0
    out = capsys.readouterr().out
    sizes = _sizes(out)
    assert sizes["teacher"] == "64 examples of data.train, batch 8, 16 steps, 1 dev evaluation"  # 2 epochs of 8
    assert sizes["gd"].endswith("batch 4, 3 steps")  # its own max_steps; not evaluated (no prediction layer trained)
    assert sizes["td2"] == "64 examples of data.train, batch 8, 24 steps, 6 dev evaluations"  # every 4 below 24, and 24
    assert sizes["eval"] == "32 examples of data.dev"
    assert "time           not estimated: --time-steps K" in out and "capped by" not in out


def test_the_caps_cut_every_phase_and_the_dev_split_and_a_phase_s_own_smaller_cap_wins(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    assert main(["validate", str(recipe), "--backend", planonly, "--max-steps", "5", "--max-examples", "20"]) == 0
    out = capsys.readouterr().out
    sizes = _sizes(out)
    assert sizes["teacher"] == "20 examples of data.train, batch 8, 5 steps, 1 dev evaluation"
    assert sizes["gd"] == "20 sequences packed from data.corpus, batch 4, 3 steps"  # 3 < 5
    assert sizes["td1"] == "20 examples of data.train, batch 8, 3 steps"  # one epoch of 20; not evaluated
    assert sizes["td2"] == "20 examples of data.train, batch 8, 5 steps, 2 dev evaluations"
    assert sizes["eval"] == "20 examples of data.dev"
    assert "capped by      --max-steps 5, --max-examples 20" in out


def test_the_caps_are_recipe_fields_the_run_records_and_the_runner_follows(tmp_path, planonly):
    recipe = write_tiny_recipe(tmp_path)
    args = _parser().parse_args(["run", str(recipe), "--backend", planonly, "--max-steps", "2",
                                 "--max-examples", "10"])
    p = load_plan(args)
    assert (p.recipe.run.max_steps, p.recipe.run.max_examples) == (2, 10)
    assert [(ph.spec.max_steps, ph.spec.max_examples) for ph in p.phases if ph.spec.kind != "evaluate"] == [(2, 10)] * 4
    runner = Runner(p)
    assert len(runner.dataset("dev")) == 10 and len(runner._examples["dev"].labels) == 10
    assert len(runner.dataset("train")) == 64  # a phase takes its head: the split itself stays whole


def test_a_resume_with_other_caps_is_refused_and_a_run_from_before_them_resumes_uncapped():
    data = {"batching": "fixed", "pad_to_multiple_of": 16}

    def recipe(**run) -> dict:
        return {"run": {"seed": 1, "precision": "fp32", **run}, "data": data, "phases": [{"name": "a"}]}

    old = {"run": {"seed": 1}, "phases": [{"name": "a"}]}  # recipe.json of an engine without the caps
    assert differences(old, {}, recipe(max_steps=0, max_examples=0), {}) == []
    assert differences(recipe(max_steps=2, max_examples=0), {}, recipe(max_steps=3, max_examples=50), {}) == [
        "run.max_examples (0 -> 50)", "run.max_steps (2 -> 3)"]


@pytest.mark.parametrize("flag", ["--max-steps", "--max-examples"])
def test_a_cap_must_be_a_positive_whole_number(tmp_path, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(tmp_path / "r.toml"), flag, "0"])
    assert exc.value.code == 2
    assert f"{flag}: expected a positive whole number, got 0" in capsys.readouterr().err


def test_time_steps_times_real_steps_and_estimates_each_phase(tmp_path, capsys):
    pytest.importorskip("distill_engine_torch")
    recipe = write_tiny_recipe(tmp_path)
    assert main(["validate", str(recipe), "--backend", "torch", "--time-steps", "2", "--max-steps", "4"]) == 0
    out = capsys.readouterr().out
    sizes = _sizes(out)
    for name in ("teacher", "gd", "td1", "td2"):
        assert re.search(r"; time ~[\d.]+ s \([\d.e-]+ s/step over 2 timed steps, first [\d.e-]+ s\)$", sizes[name]), out
    assert re.search(r"; time ~[\d.]+ s \([\d.e-]+ s per batch of 16\)$", sizes["eval"]), out
    assert re.search(r"^  time +~[\d.]+ s for the phases on cpu", out, re.M), out


def test_the_example_cap_cuts_augment_s_input_and_validate_bounds_data_not_augmented_yet(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    glove = tmp_path / "glove.txt"
    glove.write_text("good 0.1 0.2\nbad -0.1 0.3\nfilm 0.5 0.5\n")
    sets = ["--set", "phases.td1.data=train_aug", "--set", f"augment.glove={glove}", "--set",
            f"augment.output={tmp_path / 'aug' / 'train_aug.tsv'}"]

    def plan_of(*extra):
        return load_plan(_parser().parse_args(["validate", str(recipe), "--backend", planonly, *sets, *extra]))

    assert plan_of().augment.max_examples == 0
    assert plan_of("--max-examples", "10").augment.max_examples == 10
    assert plan_of("--max-examples", "10", "--set", "augment.max_examples=5").augment.max_examples == 5
    assert main(["validate", str(recipe), "--backend", planonly, *sets]) == 0
    # SST-2 draws 20 texts per example: 64 examples and at most 20 new rows each
    assert _sizes(capsys.readouterr().out)["td1"] == (
        "at most 1344 examples of data.train augmented, batch 8, at most 168 steps")  # td1: not evaluated
    assert main(["validate", str(recipe), "--backend", planonly, *sets, "--max-examples", "10"]) == 0
    assert _sizes(capsys.readouterr().out)["td1"] == (  # the file holds its 10 sources at least: exactly 10
        "10 examples of data.train augmented, batch 8, 2 steps")


def test_examples_without_head_are_evaluated_whole():
    from distill_engine.data.tasks import TaskExamples
    from distill_engine.tasks.base import capped_examples

    class Plain:  # a plugin's examples: len() and labels only
        labels = None

        def __len__(self):
            return 5

    plain = Plain()
    assert capped_examples(plain, 2) is plain
    cut = capped_examples(TaskExamples(["a", "b", "c"], None, None), 2)
    assert cut.text_a == ["a", "b"] and capped_examples(cut, 0) is cut


def test_a_cap_that_leaves_a_phase_no_step_names_the_flag(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    assert main(["validate", str(recipe), "--backend", planonly, "--max-examples", "3",
                 "--set", "phases.td1.drop_last=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: phases[2] (td1): no training steps: 3 examples from data.train")
    assert "raise --max-examples (run.max_examples = 3)" in err
