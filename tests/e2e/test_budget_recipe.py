"""The CPU budget pipeline of docs/results.md "A real TinyBERT on a 2-core CPU" stays true: its three recipes
chain into each other, validate on every installed backend, and their first steps run on the real
data in ../shared (GD, the teacher's fine-tuning, then augmentation, TD1, TD2 and evaluation from
those two outputs), exactly as the page's commands run them, only with fewer steps."""

import json
import re
import shlex
from pathlib import Path

import pytest

from distill_engine.cli import main
from distill_engine.recipe import load_recipe
from tests.conftest import backend_installed

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
GD, TEACHER, TD = (RECIPES / f"{name}.toml" for name in
                   ("tinybert_general_cpu", "tinybert_sst2_cpu_teacher", "tinybert_sst2_cpu"))


def _shared():
    shared = ROOT.parent / "shared"
    if not (shared / "data" / "glove").is_dir() or not (shared / "models" / "all-MiniLM-L6-v2").is_dir():
        pytest.skip(f"needs {shared} (the shared data beside the checkout)")
    return shared


def test_the_td_recipe_starts_from_the_other_two_recipes_outputs():
    """student.init is the GD run's final student and teacher.path the teacher run's best teacher,
    as docs/results.md runs them from the repository root (output_dir is relative to the working directory)."""
    gd, teacher, td = (load_recipe(path) for path in (GD, TEACHER, TD))
    assert Path(td.student.init) == (ROOT / gd.run.output_dir / "gd" / "final").resolve()
    assert Path(td.teacher.path) == (ROOT / teacher.run.output_dir / "teacher" / "best").resolve()
    assert (td.student.format, td.teacher.format) == ("neutral", "neutral")
    # the student TD trains is the one GD trained, and the teacher the one it fine-tuned
    assert (gd.student.layers, gd.student.hidden_size, gd.student.projection) == (4, 312, "shared")
    assert gd.teacher.path == teacher.teacher.path
    assert teacher.data.train == td.data.train and teacher.data.dev == td.data.dev
    assert teacher.data.max_seq_length == td.data.max_seq_length == 64
    # the budget: what docs/results.md's table states
    assert [(p.name, p.max_steps) for p in td.phases] == [("teacher_eval", 0), ("td1", 6000), ("td2", 3000), ("eval", 0)]
    assert all(p.data == "train_aug" for p in td.phases[1:3])


def _budget_commands() -> list[list[str]]:
    """docs/results.md's budget-run block: each `distill-engine ...` command's arguments."""
    text = (ROOT / "docs" / "results.md").read_text()
    block = re.search(r"<!-- budget-run -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "docs/results.md lost its budget-run block"
    lines = [line for line in block.group(1).replace("\\\n", " ").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    commands = [shlex.split(line) for line in lines]
    assert all(c[0].endswith("distill-engine") and c[1] == "run" and "--resume" in c for c in commands), commands
    return [[str(ROOT / a) if a.endswith(".toml") else a for a in c[1:]] for c in commands]


def _run(argv: list[str], out: Path, *overrides: str) -> list[dict]:
    assert main(argv + ["--no-progress", "--output-dir", str(out)] + [a for s in overrides for a in ("--set", s)]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.skipif(not backend_installed("torch"), reason="backend torch not installed")
def test_the_readme_commands_run_their_first_steps_on_real_data(tmp_path, capsys):
    """GD, the teacher and TD on torch as docs/results.md runs them (a few steps each, into tmp_path);
    the page's other commands (MindSpore, the ablations) validated from the same two outputs."""
    _shared()
    gd_argv, teacher_argv, td_argv, *others = _budget_commands()
    assert [a for a in (gd_argv[1], teacher_argv[1], td_argv[1])] == [str(GD), str(TEACHER), str(TD)]
    gd = _run(gd_argv, tmp_path / "gd", "phases.gd.max_steps=2", "phases.gd.max_examples=64")
    assert gd[0]["steps"] == 2
    teacher = _run(teacher_argv, tmp_path / "teacher", "phases.teacher.max_steps=3", "phases.teacher.eval_every=2")
    assert teacher[0]["steps"] == 3 and 0 <= teacher[0]["dev"]["accuracy"] <= 1
    starts = [f'student.init="{tmp_path / "gd" / "gd" / "final"}"',
              f'teacher.path="{tmp_path / "teacher" / "teacher" / "best"}"',
              f'run.cache_dir="{tmp_path / "cache"}"', "augment.max_examples=40"]
    capsys.readouterr()
    td = _run(td_argv, tmp_path / "td", *starts, "phases.td1.max_steps=2", "phases.td2.max_steps=2",
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
    # the MindSpore run and the ablations: the same recipe, checked from the same starts
    assert len(others) == 3
    for argv in others:
        backend = argv[argv.index("--backend") + 1]
        if not backend_installed(backend):
            continue
        own = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        # a later --set wins: the page's own overrides (student.init=random) come after the starts
        argv = ["validate"] + [a for a in argv[1:] if a != "--resume"] + [a for s in starts + own for a in ("--set", s)]
        assert main(argv) == 0, argv
        out = capsys.readouterr().out
        augmented = "(N=20, p=0.4, K=15, seed 42, GloVe only)" in out
        assert "td1" in out and augmented == ("phases.td1.data=train" not in argv), out
