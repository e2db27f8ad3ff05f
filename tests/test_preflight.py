"""Preflight: the schema's ranges (and their reference page), and what plan() checks in files.

tests/test_fuzz_inputs.py throws malformed input at the CLI; this file checks the pieces: every
numeric field has a range, the documented range is the one enforced, values inside a range are
accepted (boundaries included or not as documented), and plan() reads each data file once, keeps
what it read, and refuses what would fail only later in a run.
"""

from __future__ import annotations

import copy
import math
import re
import time
import typing
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_engine.cli import main
from distill_engine.data.tasks import Task
from distill_engine.data.textfile import read_text
from distill_engine.data.tokenizer import check_vocab
from distill_engine.errors import DataError, DistillError, FieldError, RecipeError, one_line
from distill_engine.recipe import load_recipe, schema, structure
from distill_engine.recipe.fields import Range, describe_range, range_of
from distill_engine.testing.fixtures import tiny_config, write_tiny_recipe
from test_cli_errors import _error  # exit 2, one "error:" line

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "recipe-reference.md"

TABLES = {"run": schema.RunSpec, "teacher": schema.TeacherSpec, "student": schema.StudentSpec,
          "data": schema.DataSpec, "phases[i]": schema.PhaseSpec, "phases[i].losses[j]": schema.LossSpec,
          "phases[i].mapping": schema.MappingSpec, "phases[i].optimizer": schema.OptimizerConfig,
          "phases[i].schedule": schema.ScheduleConfig, "data.task": Task, "augment": schema.AugmentSpec}


def _fields():
    for prefix, cls in TABLES.items():
        for field in attrs.fields(cls):
            if cls is schema.LossSpec and field.name == "params":
                continue  # a kind's parameters, written in the loss's table: listed in prose (test below)
            yield f"{prefix}.{field.name}", field


def test_reference_describes_every_builtin_loss_parameter():
    from distill_engine.losses.builtin import BUILTIN_LOSSES

    text = REFERENCE.read_text()
    for definition in BUILTIN_LOSSES:
        assert f"`{definition.name}`" in text, f"docs/recipe-reference.md does not name loss {definition.name}"
        for param in definition.params:
            assert f"- `{param.name}`" in text, f"docs/recipe-reference.md does not describe {param.name}"


def _is_numeric(tp) -> bool:
    if tp in (int, float):
        return True
    args = [a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis]
    return bool(args) and all(a in (int, float) for a in args)


def _owner(path: str) -> type:
    return TABLES[path.rsplit(".", 1)[0]]


def _reference_rows() -> dict[str, list[str]]:
    rows = {}
    for line in REFERENCE.read_text().splitlines():
        m = re.match(r"\| `([^`]+)` \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


# --------------------------------------------------------------------------- ranges and their docs

def test_every_numeric_field_has_a_range():
    numeric = [(path, f) for path, f in _fields() if _is_numeric(typing.get_type_hints(_owner(path))[f.name])]
    assert len(numeric) >= 35  # 35 today: run 7, teacher 2, student 7, data 1, phases 17
    missing = [path for path, f in numeric if range_of(f) is None]
    assert not missing, f"numeric fields without a range: {missing}"


def test_reference_lists_every_field_with_the_enforced_range():
    rows = _reference_rows()
    for path, field in _fields():
        assert path in rows, f"docs/recipe-reference.md has no row for {path}"
        described = describe_range(field)
        if described is not None:
            assert described in rows[path][2], f"{path}: docs say {rows[path][2]!r}, the schema checks {described!r}"
    extra = set(rows) - {path for path, _ in _fields()}
    assert not extra, f"docs list fields the schema does not have: {extra}"


def test_range_describe_and_contains():
    assert Range(0, 1, hi_open=True).describe("p") == "0 <= p < 1"
    assert Range(0, 1, lo_open=True).describe("lr") == "0 < lr <= 1"
    assert Range(1, lo_open=True, off=True).describe("f") == "0 (off) or f > 1"
    r = Range(1.0, 2.0**32, off=True)
    assert r.contains(0) and r.contains(1) and r.contains(2.0**32) and not r.contains(0.5)
    assert not r.contains(float("nan")) and not Range().contains(float("inf"))
    with pytest.raises(FieldError, match=r"^x: nan is not a finite number; allowed: x finite$"):
        Range().check("x", float("nan"))


def _base() -> dict:
    return {"student": {"hidden_size": 8, "heads": 4},
            "phases": [{"name": "a", "kind": "task_distill_prediction", "max_steps": 1,
                        "losses": [{"kind": "soft_cross_entropy"}],
                        "mapping": {"strategy": "explicit", "layers": [1]}}]}


def _set(data: dict, path: str, value) -> dict:
    data = copy.deepcopy(data)
    table, leaf = path.rsplit(".", 1)
    node = {"phases[i]": data["phases"][0], "phases[i].losses[j]": data["phases"][0]["losses"][0],
            "phases[i].mapping": data["phases"][0]["mapping"]}.get(table)
    if node is None:
        node = data.setdefault(table.split(".")[-1], {}) if not table.startswith("phases") else \
            data["phases"][0].setdefault(table.split(".")[-1], {})
    if path == "student.hidden_size":
        data["student"]["heads"] = 1
    if path == "student.heads":
        data["student"]["hidden_size"] = value
    each = {"phases[i].optimizer.betas": [value, value], "phases[i].mapping.layers": [value],
            "student.teacher_layers": [value]}
    node[leaf] = each.get(path, value)
    return data


NUMERIC = [(path, f) for path, f in _fields() if range_of(f) is not None]


def _inside(rng: Range, is_int: bool):
    lo = rng.lo if rng.lo is not None else -1e9
    hi = rng.hi if rng.hi is not None else 1e12
    if is_int:
        return st.integers(int(math.ceil(lo)) + (1 if rng.lo_open else 0), int(hi) - (1 if rng.hi_open else 0))
    return st.floats(lo, hi, exclude_min=rng.lo_open, exclude_max=rng.hi_open)


@pytest.mark.parametrize("path, field", NUMERIC, ids=[p for p, _ in NUMERIC])
def test_values_inside_a_range_are_accepted_and_its_ends_as_documented(path, field):
    rng = range_of(field)
    hint = typing.get_type_hints(_owner(path))[field.name]
    is_int = hint is int or typing.get_args(hint)[:1] == (int,)
    for end, is_open in ((rng.lo, rng.lo_open), (rng.hi, rng.hi_open)):
        if end is None:
            continue
        value = int(end) if is_int else float(end)
        if is_open:
            with pytest.raises(RecipeError, match=re.escape(path.split(".")[-1])):
                structure(_set(_base(), path, value))
        else:
            structure(_set(_base(), path, value))
    if rng.off:
        structure(_set(_base(), path, 0))

    @settings(max_examples=15, deadline=None, derandomize=True, database=None)
    @given(value=_inside(rng, is_int))
    def inside(value):
        if path.endswith(".epochs") and value == 0:
            return
        structure(_set(_base(), path, value))

    inside()


@pytest.mark.parametrize("name", ["a", "td2", "Phase_1", "x-y", "_private", "A" * 64, "states", "statE1"])
def test_good_phase_names(name):
    data = _base()
    data["phases"][0]["name"] = name
    assert structure(data).phases[0].name == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "/abs", "a/b", "a b", "-x", ".hidden", "A" * 65, "state",
                                  "STATE", "é", "a\nb", "a.b"])
def test_bad_phase_names(name):
    data = _base()
    data["phases"][0]["name"] = name
    with pytest.raises(RecipeError, match=r"phases\[0\]\.name: ") as info:
        structure(data)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- the error text

def test_errors_are_always_one_line():
    assert one_line("a\nb\r\nc\u2028d") == "a\\nb\\r\\nc\\u2028d"
    assert str(DataError("file x\ny: bad")) == "file x\\ny: bad"
    assert len(str(DistillError("\x1c\x85")).splitlines()) == 1


def test_read_text_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "f.tsv"
    path.write_bytes(b"\xef\xbb\xbfsentence\tlabel\nok\t1\nbad \xff\t0\n")
    with pytest.raises(DataError, match=r"f\.tsv:3: not valid UTF-8 \(invalid start byte at byte 27\)"):
        read_text(path, "GLUE file", bom=True)
    with pytest.raises(DataError, match="is a folder"):
        read_text(tmp_path, "GLUE file")
    with pytest.raises(DataError, match="GLUE file not found"):
        read_text(tmp_path / "nope.tsv", "GLUE file")
    path.write_bytes(b"\xef\xbb\xbfsentence\tlabel\n")
    assert read_text(path, "GLUE file", bom=True) == "sentence\tlabel\n"


def test_check_vocab(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\n")
    assert check_vocab(vocab) == 7
    vocab.write_text("[PAD]\n[CLS]\n[SEP]\na\n")
    with pytest.raises(DataError, match=r"vocab has no \[UNK\], \[MASK\] tokens"):
        check_vocab(vocab)
    vocab.write_text("")
    with pytest.raises(DataError, match="empty vocab"):
        check_vocab(vocab)


# --------------------------------------------------------------------------- plan()

def test_plan_reads_each_data_file_once_and_keeps_it(tmp_path, planonly, monkeypatch):
    from distill_engine import planning
    from distill_engine.tasks.sequence import SequenceTaskType

    calls: list[str] = []
    real = SequenceTaskType.read
    monkeypatch.setattr(SequenceTaskType, "read",
                        lambda self, path, task: calls.append(Path(path).name) or real(self, path, task))
    recipe = write_tiny_recipe(tmp_path)
    p = planning.plan(load_recipe(recipe), planonly)
    assert sorted(calls) == ["dev.tsv", "train.tsv"]  # three phases train on train.tsv, two evaluate on dev
    assert len(p.examples["train"]) == 64 and len(p.examples["dev"]) == 32
    assert p.examples["train"].labels is not None
    assert p.corpus_documents is not None and len(p.corpus_documents) == 6


def test_a_good_student_init_passes(tmp_path, planonly, capsys):
    from distill_engine.bert import init_parameters
    from distill_engine.checkpoint import save_checkpoint

    recipe = write_tiny_recipe(tmp_path)
    config = tiny_config(hidden_size=8, num_hidden_layers=2, intermediate_size=16, num_labels=2,
                         projection="shared", projection_dim=16, classifier_activation="none")  # the recipe's head
    state = init_parameters(config, 0)
    save_checkpoint(tmp_path / "student", config, state)
    assert main(["validate", str(recipe), "--backend", planonly, "--set", f"student.init={tmp_path / 'student'}"]) == 0
    # without its projection and head (both made fresh) it is fine too
    trimmed = {k: v for k, v in state.items() if not k.startswith(("fit_dense", "classifier."))}
    save_checkpoint(tmp_path / "student", attrs.evolve(config, num_labels=0, projection="none", projection_dim=0),
                    trimmed)
    assert main(["validate", str(recipe), "--backend", planonly, "--set", f"student.init={tmp_path / 'student'}"]) == 0
    capsys.readouterr()


def test_a_student_init_with_another_projection_names_both_modes(tmp_path, planonly, capsys):
    from distill_engine.bert import init_parameters
    from distill_engine.checkpoint import save_checkpoint

    recipe = write_tiny_recipe(tmp_path)
    config = tiny_config(hidden_size=8, num_hidden_layers=2, intermediate_size=16, num_labels=2,
                         projection="shared", projection_dim=16, classifier_activation="none")  # the recipe's head
    save_checkpoint(tmp_path / "student", config, init_parameters(config, 0))
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", f"student.init={tmp_path / 'student'}",
                          "--set", 'student.projection="paper"'])
    assert "unexpected tensors: fit_dense.bias, fit_dense.weight" in err
    assert 'its projection is "shared" and student.projection says "paper"' in err
    # the paper's projections are new tensors: a student without any gets them fresh
    trimmed = {k: v for k, v in init_parameters(config, 0).items() if not k.startswith("fit_dense")}
    save_checkpoint(tmp_path / "student", attrs.evolve(config, projection="none", projection_dim=0), trimmed)
    assert main(["validate", str(recipe), "--backend", planonly, "--set", f"student.init={tmp_path / 'student'}",
                 "--set", 'student.projection="paper"']) == 0
    capsys.readouterr()


def test_every_weight_zero_trains_nothing(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly,
                          "--set", "phases.td2.losses=[{kind='soft_cross_entropy', weight=0}]"])
    assert "phases[3] (td2).losses: every loss has weight 0" in err
    # one term at 0 next to others is fine
    assert main(["validate", str(recipe), "--backend", planonly, "--set",
                 "phases.td1.losses=[{kind='attention_mse', weight=0}, {kind='hidden_mse'}]"]) == 0


def test_evaluating_a_teacher_without_a_head(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    text = recipe.read_text()
    (tmp_path / "e.toml").write_text(text[: text.index("[[phases]]")] +
                                     '[[phases]]\nname = "e"\nkind = "evaluate"\ndata = "dev"\ntarget = "teacher"\n')
    err = _error(capsys, ["validate", str(tmp_path / "e.toml"), "--backend", planonly])
    assert "phases[0] (e): the teacher has no classification head" in err


def test_eval_every_needs_a_task(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    text = recipe.read_text()
    gd_only = text[: text.index("[[phases]]")] + text[text.index('[[phases]]\nname = "gd"'):text.index(
        '[[phases]]\nname = "td1"')]
    (tmp_path / "gd.toml").write_text(gd_only.replace('task = "sst2"', 'task = ""'))
    assert main(["validate", str(tmp_path / "gd.toml"), "--backend", planonly]) == 0
    err = _error(capsys, ["validate", str(tmp_path / "gd.toml"), "--backend", planonly,
                          "--set", "phases.gd.eval_every=2"])
    assert "phases[0] (gd).eval_every: evaluating needs data.task" in err


def test_eval_every_on_a_phase_that_does_not_train_the_prediction_layer_is_refused(tmp_path, planonly, capsys):
    """TD1 (and GD) leave the classifier untrained: they are not evaluated, so asking for it is an error."""
    recipe = write_tiny_recipe(tmp_path)
    for phase, index in (("td1", 2), ("gd", 1)):
        err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", f"phases.{phase}.eval_every=2"])
        assert err == (f"error: phases[{index}] ({phase}).eval_every: this phase does not train the prediction layer, so "
                       "it is not evaluated (its dev metrics would score an untrained head); set eval_every = 0 and "
                       "score the student with an evaluate phase after a phase that trains it"), err


def test_corpus_rows_are_counted_only_when_documents_do_not_suffice(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    # one document of 30 sentences: packs into several rows of 12 tokens, although it is one document
    (tmp_path / "corpus.txt").write_text("\n".join(["good movie , very fun story"] * 30) + "\n")
    sets = ["--set", "phases.gd.drop_last=true", "--set", "phases.gd.batch_size=4"]
    assert main(["validate", str(recipe), "--backend", planonly, *sets]) == 0
    (tmp_path / "corpus.txt").write_text("good movie\n")  # one row only
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, *sets])
    assert "phases[1] (gd): no training steps" in err and "drop_last drops every batch of 4" in err
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, "--set", "phases.gd.max_examples=2", *sets])
    assert "phases[1] (gd): no training steps" in err


def test_too_many_steps(tmp_path, planonly, capsys):
    recipe = write_tiny_recipe(tmp_path)
    rows = "".join(f"good movie {i}\t{i % 2}\n" for i in range(10_001))
    (tmp_path / "glue" / "train.tsv").write_text("sentence\tlabel\n" + rows)
    sets = ["--set", "phases.td1.batch_size=1", "--set", "phases.td1.epochs=10000"]
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly, *sets])
    assert "phases[2] (td1): 100010000 steps is more than 1e+08" in err
    assert main(["validate", str(recipe), "--backend", planonly, *sets, "--set", "phases.td1.max_steps=1000"]) == 0


def test_nan_checkpoint_is_damaged_not_a_learning_rate_problem(tmp_path, planonly, capsys):
    from safetensors.numpy import load_file, save_file

    recipe = write_tiny_recipe(tmp_path)
    weights = tmp_path / "teacher" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["bert.encoder.layer.0.output.dense.bias"] = np.full(16, np.nan, np.float32)
    save_file(tensors, str(weights))
    err = _error(capsys, ["validate", str(recipe), "--backend", planonly])
    assert "the checkpoint is damaged: tensor encoder.layer.0.output.dense.bias holds 16 NaN/inf values" in err


SHARED = ROOT.parent / "shared"


@pytest.mark.realdata
def test_sst2_recipe_preflight_is_cheap(planonly):
    from distill_engine.planning import plan

    for part in (("data", "glue", "SST-2", "train.tsv"), ("models", "all-MiniLM-L6-v2")):
        if not SHARED.joinpath(*part).exists():
            pytest.skip(f"needs {SHARED.joinpath(*part)} (the shared data beside the checkout)")
    recipe = load_recipe(ROOT / "recipes" / "tinybert_sst2.toml")
    start = time.perf_counter()
    p = plan(recipe, planonly)
    elapsed = time.perf_counter() - start
    assert len(p.examples["train"]) == 67_349 and len(p.examples["dev"]) == 872
    assert elapsed < 10, f"plan() took {elapsed:.1f} s"  # about 0.5 s: read once, no tokenising
