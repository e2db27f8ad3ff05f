"""The CPU budget pipeline of README "A real TinyBERT on a 2-core CPU" stays true: its three recipes
chain into each other, validate on every installed backend, and their first steps run on the real
data in ../shared (GD, the teacher's fine-tuning, then augmentation, TD1, TD2 and evaluation from
those two outputs), exactly as the README's commands run them, only with fewer steps."""

import json
from pathlib import Path

import pytest

from distill_engine.cli import main
from distill_engine.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
GD, TEACHER, TD = (RECIPES / f"{name}.toml" for name in
                   ("tinybert_general_cpu", "tinybert_sst2_cpu_teacher", "tinybert_sst2_cpu"))


def _shared():
    shared = ROOT.parent / "shared"
    if not (shared / "data" / "glove").is_dir() or not (shared / "models" / "all-MiniLM-L6-v2").is_dir():
        pytest.skip(f"needs {shared} (the shared data beside the checkout)")
    return shared


def _installed(name: str) -> bool:
    from distill_engine.plugins import backend_registry

    return name in backend_registry()


def test_the_td_recipe_starts_from_the_other_two_recipes_outputs():
    """student.init is the GD run's final student and teacher.path the teacher run's best teacher,
    as the README runs them from the repository root (output_dir is relative to the working directory)."""
    _shared()
    gd, teacher, td = (load_recipe(path) for path in (GD, TEACHER, TD))
    assert Path(td.student.init) == (ROOT / gd.run.output_dir / "gd" / "final").resolve()
    assert Path(td.teacher.path) == (ROOT / teacher.run.output_dir / "teacher" / "best").resolve()
    assert (td.student.format, td.teacher.format) == ("neutral", "neutral")
    # the student TD trains is the one GD trained, and the teacher the one it fine-tuned
    assert (gd.student.layers, gd.student.hidden_size, gd.student.projection) == (4, 312, "shared")
    assert gd.teacher.path == teacher.teacher.path
    assert teacher.data.train == td.data.train and teacher.data.dev == td.data.dev
    assert teacher.data.max_seq_length == td.data.max_seq_length == 64
    # the budget: what README's table states
    assert [(p.name, p.max_steps) for p in td.phases] == [("teacher_eval", 0), ("td1", 6000), ("td2", 3000), ("eval", 0)]
    assert all(p.data == "train_aug" for p in td.phases[1:3])


def _run(recipe: Path, out: Path, backend: str, *overrides: str) -> list[dict]:
    args = ["run", str(recipe), "--backend", backend, "--no-progress", "--output-dir", str(out)]
    for assignment in overrides:
        args += ["--set", assignment]
    assert main(args) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.skipif(not _installed("torch"), reason="backend torch not installed")
def test_the_budget_pipeline_runs_its_first_steps_on_real_data(tmp_path, capsys):
    _shared()
    gd = _run(GD, tmp_path / "gd", "torch", "phases.gd.max_steps=2", "phases.gd.max_examples=64")
    assert gd[0]["steps"] == 2
    teacher = _run(TEACHER, tmp_path / "teacher", "torch", "phases.teacher.max_steps=3",
                   "phases.teacher.eval_every=2")
    assert teacher[0]["steps"] == 3 and 0 <= teacher[0]["dev"]["accuracy"] <= 1
    starts = [f'student.init="{tmp_path / "gd" / "gd" / "final"}"',
              f'teacher.path="{tmp_path / "teacher" / "teacher" / "best"}"',
              f'run.cache_dir="{tmp_path / "cache"}"', "augment.max_examples=40"]
    capsys.readouterr()
    for backend in ("torch", "mindspore"):
        if _installed(backend):
            assert main(["validate", str(TD), "--backend", backend] + [a for s in starts for a in ("--set", s)]) == 0
            out = capsys.readouterr().out
            assert "td1" in out and "(N=20, p=0.4, K=15, seed 42, GloVe only)" in out, out
    td = _run(TD, tmp_path / "td", "torch", *starts, "phases.td1.max_steps=2", "phases.td2.max_steps=2",
              "phases.td2.eval_every=1")
    assert [(s["phase"], s["steps"]) for s in td] == [("teacher_eval", 0), ("td1", 2), ("td2", 2), ("eval", 0)]
    out = capsys.readouterr().out
    assert "[augment] 40 training rows -> " in out
    records = [json.loads(line) for line in (tmp_path / "td" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["event"] == "augmented" for r in records)
    # td2 kept its best evaluation, the evaluate phase scored it, and the test set was predicted
    assert td[3]["dev"]["accuracy"] == max(r["accuracy"] for r in records
                                           if r["event"] == "eval" and r["phase"] == "td2")
    assert td[0]["dev"]["accuracy"] > 0  # the teacher evaluated, for the report's table
    assert len((tmp_path / "td" / "eval" / "test_predictions.tsv").read_text().splitlines()) == 1822
