"""The run directory's rules, the repair of interrupted writes, and recipe fingerprints (no framework)."""

import json
import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_engine.bert import init_parameters
from distill_engine.checkpoint import load_neutral, save_checkpoint
from distill_engine.fingerprint import differences, fingerprint, flatten, input_digests, math_view
from distill_engine.io import recover_interrupted_writes
from distill_engine.recipe import load_recipe, recipe_to_dict
from distill_engine.rundir import RunDirectory, RunDirError, check_output_dir
from distill_engine.runstate import StateStore
from distill_engine.testing.fixtures import tiny_config, write_tiny_recipe


def test_a_new_run_refuses_a_directory_holding_another_run(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"id": "abc123", "created": 0}))
    with pytest.raises(RunDirError, match=r"holds another run \(id abc123.*--resume.*--overwrite"):
        RunDirectory(tmp_path).open("new")


def test_the_python_api_is_told_its_own_arguments_not_the_command_line_s_flags(tmp_path, planonly):
    """distill_engine.run(...) into a directory that holds another run: resume=True / overwrite=True."""
    import distill_engine

    recipe = write_tiny_recipe(tmp_path)
    run_dir = tmp_path / "existing"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"id": "abc123", "created": 0}))
    with pytest.raises(RunDirError) as exc:
        distill_engine.run(recipe, backend=planonly, output_dir=run_dir)
    assert "pass resume=True to continue it or overwrite=True to replace it" in str(exc.value)
    assert "--" not in str(exc.value)


def test_a_directory_of_other_files_is_never_used_even_with_overwrite(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    for mode in ("new", "resume", "overwrite"):
        with pytest.raises(RunDirError, match="holds no distill-engine run.*thesis.tex"):
            RunDirectory(tmp_path).open(mode)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_overwrite_replaces_only_a_run(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "td1").mkdir()
    rd = RunDirectory(tmp_path)
    assert rd.open("overwrite") is None
    rd.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_output_dir_that_is_a_file_or_not_writable(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(RunDirError, match="is a file"):
        check_output_dir(tmp_path / "f" / "run")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        with pytest.raises(RunDirError, match="not writable"):
            check_output_dir(locked / "run")


def test_one_process_at_a_time(tmp_path):
    first = RunDirectory(tmp_path / "run")
    first.open("new")
    try:
        with pytest.raises(RunDirError, match="another distill-engine process is running"):
            RunDirectory(tmp_path / "run").open("resume")
    finally:
        first.close()


def test_nothing_is_written_outside_the_run(tmp_path):
    rd = RunDirectory(tmp_path / "run")
    assert rd.inside("td1") == tmp_path / "run" / "td1"
    for bad in ("../outside", "/etc", "a/../../x"):
        with pytest.raises(Exception, match="outside run.output_dir"):
            rd.inside(bad)


def test_a_kill_between_the_renames_of_a_swap_keeps_the_previous_best(tmp_path):
    config = tiny_config()
    old = init_parameters(config, 0)
    save_checkpoint(tmp_path / "td2" / "best", config, old, step=1)
    # what a kill between os.replace(best, .best.old) and os.replace(tmp, best) leaves behind
    os.replace(tmp_path / "td2" / "best", tmp_path / "td2" / ".best.old")
    (tmp_path / "td2" / ".best.tmp-abc").mkdir()
    (tmp_path / ".run.json.tmp-1").write_text("{")
    done = recover_interrupted_writes(tmp_path)
    assert len(done) == 3
    back = load_neutral(tmp_path / "td2" / "best")
    assert back.manifest["step"] == 1 and all(np.array_equal(back.state[k], old[k]) for k in old)
    assert sorted(p.name for p in (tmp_path / "td2").iterdir()) == ["best"]
    assert not (tmp_path / ".run.json.tmp-1").exists()


def test_a_superseded_old_copy_is_removed(tmp_path):
    config = tiny_config()
    save_checkpoint(tmp_path / "best", config, init_parameters(config, 0))
    save_checkpoint(tmp_path / ".best.old", config, init_parameters(config, 1))
    recover_interrupted_writes(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert load_neutral(tmp_path / "best").manifest["config"]


def test_states_are_pruned_to_the_last_few_and_the_newest_complete_one_wins(tmp_path):
    store = StateStore(tmp_path, keep=2)
    for step in range(4):
        store.write(f"td1-{step}", {"step": step}, {"trainer": {"adam.step": np.array(step, np.int64)}})
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["000002-td1-2", "000003-td1-3"]
    latest = store.latest()
    assert latest.doc["step"] == 3 and latest.tensors("trainer")["adam.step"].shape == ()
    (latest.path / "state.json").write_text("{damaged")
    assert store.latest().doc["step"] == 2


def _recipe_dict(tmp_path, *overrides):
    return recipe_to_dict(load_recipe(write_tiny_recipe(tmp_path), list(overrides)))


def test_differences_name_the_fields_that_change_the_math(tmp_path):
    base = _recipe_dict(tmp_path)
    digests = input_digests(base)
    same = _recipe_dict(tmp_path, "run.log_every=5", "run.checkpoint_every=7", 'run.output_dir="elsewhere"')
    assert differences(base, digests, same, digests) == []
    assert fingerprint(base, digests, "torch") == fingerprint(same, digests, "torch")
    changed = _recipe_dict(tmp_path, "phases.td1.optimizer.lr=0.5", "run.seed=7")
    found = differences(base, digests, changed, digests)
    assert found == ["phases[2] (td1).optimizer.lr (0.001 -> 0.5)", "run.seed (1 -> 7)"]
    assert fingerprint(base, digests, "torch") != fingerprint(changed, digests, "torch")


def test_a_changed_input_file_is_a_difference(tmp_path):
    base = _recipe_dict(tmp_path)
    before = input_digests(base)
    train = flatten(base)["data.train"]
    with open(train, "a") as f:
        f.write("a new sentence\t1\n")
    assert differences(base, before, base, input_digests(base)) == ["data.train (holds other contents since the run started)"]


@settings(max_examples=50, deadline=None)
@given(st.recursive(st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
                    lambda inner: st.dictionaries(st.text("abc", min_size=1, max_size=2), inner, max_size=3), max_leaves=8))
def test_flatten_sees_every_leaf_change(tree):
    if not isinstance(tree, dict):
        tree = {"x": tree}
    assert math_view(tree) == math_view(json.loads(json.dumps(tree)))
    for key in flatten(tree):
        if key.endswith(".#"):
            continue
        mutated = json.loads(json.dumps(tree))
        node = mutated
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = "changed!"
        assert flatten(mutated) != flatten(tree)


def test_a_run_without_run_state_cannot_be_resumed_but_can_be_overwritten(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")  # an older engine's run: no run.json
    with pytest.raises(RunDirError, match="without run state.*--overwrite"):
        RunDirectory(tmp_path).open("resume")
    rd = RunDirectory(tmp_path)
    rd.open("overwrite")  # the refused resume released its lock
    rd.close()


def test_a_run_started_before_run_precision_existed_resumes_as_fp32():
    old = {"run": {"seed": 1}, "phases": [{"name": "a"}]}  # recipe.json of an engine without the field
    data = {"batching": "fixed", "pad_to_multiple_of": 16}  # added earlier, as the current engine writes them
    same = {"run": {"seed": 1, "precision": "fp32"}, "data": data, "phases": [{"name": "a"}]}
    assert differences(old, {}, same, {}) == []
    other = {"run": {"seed": 1, "precision": "bf16"}, "data": data, "phases": [{"name": "a"}]}
    assert differences(old, {}, other, {}) == ['run.precision ("fp32" -> "bf16")']


def test_a_run_started_before_the_fidelity_options_resumes_training_the_pad_row_with_bias_correction():
    """recipe.json of an engine without run.train_pad_embedding and phases[i].optimizer.bias_correction
    computed with a trained [PAD] row and bias-corrected Adam: those values are no change, the new
    defaults (or BertAdam) are."""
    old = {"run": {"seed": 1}, "phases": [{"name": "a", "optimizer": {"lr": 0.1}}]}
    data = {"batching": "fixed", "pad_to_multiple_of": 16}

    def new(train_pad: bool, bias_correction: bool) -> dict:
        return {"run": {"seed": 1, "precision": "fp32", "train_pad_embedding": train_pad}, "data": data,
                "phases": [{"name": "a", "optimizer": {"lr": 0.1, "bias_correction": bias_correction}}]}

    assert differences(old, {}, new(True, True), {}) == []
    assert differences(old, {}, new(False, True), {}) == ["run.train_pad_embedding (true -> false)"]
    assert differences(old, {}, new(True, False), {}) == ["phases[0] (a).optimizer.bias_correction (true -> false)"]
