"""Bad input gets one clear error line naming the field or path, and a non-zero exit, before training."""

from pathlib import Path

import pytest

from distill_engine.cli import main
from distill_engine.testing.fixtures import write_tiny_recipe

ROOT = Path(__file__).resolve().parents[1]


def _error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_validate_tiny_recipe_ok(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    assert main(["validate", str(recipe), "--backend", planonly]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "td1" in out and "mapping (2, 4)" in out


def test_wrong_recipe_key(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", "student.hiden_size=8"])
    assert 'student.hiden_size: unknown key (did you mean "hidden_size"?)' in err


def test_missing_checkpoint_directory(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", f"teacher.path={tmp_path}/gone"])
    assert f"teacher.path: checkpoint not found: {tmp_path}/gone" in err


def test_head_count_mismatch_under_attention_loss(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path, student_heads=2)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly])
    assert "student has 2 heads and the teacher 4" in err and "phases[2] (td1).losses[0]" not in err
    assert "phases[1] (gd).losses[0]" in err


def test_missing_data_file(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", "data.dev=nope.tsv"])
    assert "data.dev: file not found" in err


def test_unknown_backend_lists_available(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", "planonyl"])
    assert 'unknown backend "planonyl" (did you mean "planonly"?)' in err


def test_unserved_device(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--device", "ascend:0"])
    assert 'does not support device "ascend:0"' in err
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--device", "tpu"])
    assert 'device "tpu"' in err


def test_prediction_loss_needs_a_finetuned_teacher(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    text = recipe.read_text().replace('kind = "teacher_finetune"', 'kind = "teacher_finetune"\nmax_steps = 1', 1)
    recipe.write_text(text)
    # drop the teacher phase by making td2 the first phase's successor without one
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", "phases.0.kind=general_distill",
                          "--set", "phases.0.data=corpus"])
    assert "has no classification head" in err


def test_numpy_backend_evaluates_but_refuses_to_train(tmp_path, capsys):
    from distill_engine.bert import init_parameters
    from distill_engine.checkpoint import save_checkpoint
    from distill_engine.testing.fixtures import tiny_config

    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", "numpy"])
    assert 'backend "numpy" only evaluates; phases teacher, gd, td1, td2 train' in err
    # an evaluate-only recipe over a saved student runs on the reference
    config = tiny_config(hidden_size=8, num_hidden_layers=2, intermediate_size=16, num_labels=2)
    save_checkpoint(tmp_path / "student", config, init_parameters(config, 0))
    text = recipe.read_text()
    evaluate_only = text[: text.index("[[phases]]")] + '[[phases]]\nname = "eval"\nkind = "evaluate"\ndata = "dev"\n'
    (tmp_path / "eval.toml").write_text(evaluate_only)
    code = main(["run", str(tmp_path / "eval.toml"), "--backend", "numpy", "--no-progress",
                 "--set", f"student.init={tmp_path / 'student'}", "--set", 'student.projection="none"'])
    out = capsys.readouterr().out
    assert code == 0 and "[eval] evaluate: 0 steps, dev accuracy" in out


def test_evaluate_before_any_student_is_an_error(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    text = recipe.read_text()
    (tmp_path / "eval.toml").write_text(text[: text.index("[[phases]]")] + '[[phases]]\nname = "e"\nkind = "evaluate"\n')
    err = _error(capsys, ["validate", str(tmp_path / "eval.toml"), "--backend", "numpy"])
    assert "phases[0] (e): no student to evaluate yet" in err


def test_dropout_outside_zero_one(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", "teacher.dropout=1.5"])
    assert "teacher.dropout: 1.5 is out of range; allowed: 0 <= dropout < 1" in err


def test_teacher_dropout_overrides_the_checkpoint_config(tmp_path, planonly):
    from distill_engine.recipe import load_recipe
    from distill_engine.runner import plan

    recipe = write_tiny_recipe(tmp_path)
    kept = plan(load_recipe(recipe), planonly)
    assert kept.teacher_config.hidden_dropout_prob > 0  # the fixture's config.json
    zero = plan(load_recipe(recipe, ["teacher.dropout=0", "teacher.attention_dropout=0"]), planonly)
    assert zero.teacher_config.hidden_dropout_prob == 0 and zero.teacher_config.attention_probs_dropout_prob == 0


class _MixedPrecisionBackend:
    """A plan-only backend serving bf16 on cpu and fp16 on GPUs only, as torch does."""

    name = "mixedonly"

    def version(self):
        return "0 (test)"

    def device_kinds(self):
        return ("cpu", "gpu")

    def available_devices(self):
        from distill_engine.device import Device

        return [Device("cpu")]

    def check_device(self, device):
        from distill_engine.backend import check_device_in

        check_device_in(self, device)

    def precisions(self, device):
        return ("fp32", "bf16", "fp16") if device.kind == "gpu" else ("fp32", "bf16")


class _MixedPrecisionPlugin:
    from distill_engine.hookspecs import hookimpl

    @hookimpl
    def register_backends(self, register):
        register("mixedonly", _MixedPrecisionBackend, description="test")

    @hookimpl
    def register_loss_implementations(self, register):
        from conftest import register_builtin_losses_for

        register_builtin_losses_for(register, "mixedonly")


def test_a_precision_the_device_cannot_serve_is_refused_before_training(tmp_path, register_plugin, planonly, capsys):
    register_plugin(_MixedPrecisionPlugin(), name="mixedonly")
    recipe = write_tiny_recipe(tmp_path)
    assert main(["validate", str(recipe), "--backend", "mixedonly", "--set", 'run.precision="bf16"']) == 0
    capsys.readouterr()
    err = _error(capsys, ["validate", str(recipe), "--backend", "mixedonly", "--set", 'run.precision="fp16"'])
    assert err == ('error: run.precision: "fp16" (float16 forwards with dynamic loss scaling, float32 weights and '
                   'optimiser) needs a GPU with backend mixedonly; on cpu use "fp32" or "bf16"')
    # run refuses it too, before a run directory or any step exists
    err = _error(capsys, ["run", str(recipe), "--backend", "mixedonly", "--set", 'run.precision="fp16"'])
    assert 'run.precision: "fp16"' in err and not (tmp_path / "run").exists()
    # a backend without precisions() serves float32 only
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", 'run.precision="bf16"'])
    assert err.endswith('"bf16" (bfloat16 forwards, float32 weights and optimiser) is not served by backend planonly '
                        'on any device; on cpu use "fp32"')


def test_an_unknown_precision_names_the_field_and_the_choices(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", 'run.precision="bf61"'])
    assert "run.precision: 'bf61' is not one of fp32, bf16, fp16" in err and 'did you mean "bf16"' in err


@pytest.mark.parametrize("value, what", [('"abc', "a quoted string"), ("'abc", "a quoted string"),
                                         ("[1, 2", "an array"), ("{ a = 1", "an inline table")])
def test_a_set_value_that_opens_a_quote_and_does_not_close_it_is_an_error(tmp_path, planonly, capsys, value, what):
    """`--set run.output_dir="abc` was taken as the literal directory `"abc`."""
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", f"run.output_dir={value}"])
    assert err.startswith(f"error: --set run.output_dir={value}: the value starts {what}")
    assert not (Path.cwd() / value).exists()


def test_a_bare_word_set_value_is_still_a_string(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    out = tmp_path / "plain_dir"
    assert main(["validate", str(recipe), "--backend", planonly, "--set", f"run.output_dir={out}"]) == 0


def test_a_set_typo_is_reported_against_the_set_not_the_recipe_file(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", "run.seed=1",
                          "--set", "phases.td1.epoch=1"])
    assert err.startswith('error: --set phases.td1.epoch=1: phases[2].epoch: unknown key (did you mean "epochs"?)')
    assert str(recipe) not in err
    # a typo in the file itself is still the file's, whatever --set says
    recipe.write_text(recipe.read_text().replace("[student]\n", "[student]\nhiden_size = 8\n"))
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", "run.seed=1"])
    assert err.startswith(f"error: {recipe}: student.hiden_size: unknown key")


def test_a_problem_two_sets_make_together_names_the_first_and_says_the_problem_as_it_stands(tmp_path, planonly,
                                                                                           capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", "student.hidden_size=10",
                          "--set", "student.heads=3"])
    assert err.startswith("error: --set student.hidden_size=10: student.heads: 3 does not divide hidden_size 10")
