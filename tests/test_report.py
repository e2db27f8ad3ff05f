"""The run report and run.tensorboard without a framework: runs of the numpy backend (an evaluate
phase scoring a teacher with a head), directories that hold no run, a report without matplotlib or
whose pictures fail to draw, and the per-phase wall times of a resumed log.
(tests/e2e/test_report_runs.py reports whole torch runs, interrupted and resumed, and real data.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from distill_engine.cli import main
from distill_engine.report.rundata import _wall_times
from distill_engine.testing.fixtures import tiny_config, write_hf_bert, write_sst2_like


def _eval_recipe(root: Path, extra: str = "") -> Path:
    """A recipe whose one phase scores a teacher that has a classification head (numpy can run it)."""
    write_hf_bert(root / "teacher", tiny_config(num_labels=2))
    write_sst2_like(root / "glue")
    recipe = root / "recipe.toml"
    recipe.write_text(f"""
[run]
output_dir = "{root / 'run'}"
eval_batch_size = 8
{extra}

[teacher]
path = "teacher"

[data]
task = "sst2"
train = "glue/train.tsv"
dev = "glue/dev.tsv"
max_seq_length = 12

[[phases]]
name = "score"
kind = "evaluate"
target = "teacher"
""")
    return recipe


def _run(recipe: Path, *extra: str) -> int:
    return main(["run", str(recipe), "--backend", "numpy", "--no-progress", *extra])


def test_a_run_writes_its_report_at_the_end(tmp_path, capsys):
    assert _run(_eval_recipe(tmp_path)) == 0
    out = capsys.readouterr()
    report = tmp_path / "run" / "report"
    assert f"report written to {report / 'README.md'}" in out.out
    assert sorted(p.name for p in report.iterdir()) == ["README.md", "confusion.png", "dev.png"]  # no loss pictures
    text = (report / "README.md").read_text()
    assert "status **finished**" in text and "![Dev metrics over the run](dev.png)" in text
    assert "| | teacher | student |" in text and "| checkpoint | `teacher.path` | - |" in text
    accuracy = json.loads((tmp_path / "run" / "summary.json").read_text())[0]["dev"]["accuracy"]
    assert f"| dev accuracy | {accuracy:.4f} | - |" in text
    assert "| score | evaluate (teacher) | finished | 0 |" in text
    assert "measured with backend numpy" in text  # the teacher has a head: numpy times its predict
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert set(info["versions"]) == {"backend", "python", "numpy", "platform"}
    assert f"| python | {info['versions']['python']} |" in text


def test_report_of_a_directory_without_a_run_is_one_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'empty'} holds no distill-engine run (no run.json or metrics.jsonl); " \
                  "give the run's output directory (run.output_dir)"
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'absent'}: no such run directory"
    assert not (tmp_path / "empty" / "report").exists()


def test_without_matplotlib_the_report_has_no_pictures_and_warns_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert _run(_eval_recipe(tmp_path)) == 0
    err = capsys.readouterr().err
    assert err.count("matplotlib is not installed") == 1, err
    report = tmp_path / "run" / "report"
    assert [p.name for p in report.iterdir()] == ["README.md"]
    assert "matplotlib is not installed: the run report has no pictures" in (report / "README.md").read_text()


def test_a_failure_to_draw_or_report_does_not_fail_a_finished_run(tmp_path, capsys, monkeypatch):
    from distill_engine.report import plots

    def broken(*_args, **_kwargs):
        raise RuntimeError("no canvas")

    monkeypatch.setattr(plots, "draw", broken)
    recipe = _eval_recipe(tmp_path)
    assert _run(recipe) == 0
    assert "warning: the run report's pictures could not be drawn (RuntimeError: no canvas)" in capsys.readouterr().err
    text = (tmp_path / "run" / "report" / "README.md").read_text()
    assert "The pictures could not be drawn (RuntimeError: no canvas)." in text

    import distill_engine.report as report

    monkeypatch.setattr(report, "write_report", broken)
    assert _run(recipe, "--overwrite") == 0
    err = capsys.readouterr().err
    assert "warning: the run report could not be written (RuntimeError: no canvas); write it with: " \
           f"distill-engine report {tmp_path / 'run'}" in err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"


def test_report_replaces_only_its_own_folder(tmp_path, capsys):
    assert _run(_eval_recipe(tmp_path)) == 0
    run = tmp_path / "run"
    (run / "report" / "stale.txt").write_text("from an older report")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if "report" not in p.parts}
    assert main(["report", str(run), "--no-speed"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"report written to {run / 'report' / 'README.md'}")
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if "report" not in p.parts} == before
    assert sorted(p.name for p in (run / "report").iterdir()) == ["README.md", "confusion.png", "dev.png"]
    assert "Inference speed: not measured (--no-speed)." in (run / "report" / "README.md").read_text()
    assert not [p for p in run.iterdir() if p.name.startswith(".report")]  # no temporary folder left


def test_tensorboard_without_tensorboardx_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    recipe = _eval_recipe(tmp_path, extra="tensorboard = true")
    assert _run(recipe) == 2
    assert capsys.readouterr().err.strip() == (
        'error: run.tensorboard: true needs tensorboardX, which is not installed: pip install '
        '"distill-engine[tensorboard]" (or tensorboardX), or set run.tensorboard = false')
    assert not (tmp_path / "run").exists()
    assert main(["validate", str(recipe), "--backend", "numpy"]) == 2


def test_tensorboard_does_not_load_a_framework(tmp_path):
    """tensorboardX's writer imports torch when it can: a MindSpore run must not load PyTorch to write scalars."""
    import subprocess

    pytest.importorskip("tensorboardX")
    recipe = _eval_recipe(tmp_path, extra="tensorboard = true")
    code = ("import sys\nfrom distill_engine.cli import main\n"
            f"assert main(['run', {str(recipe)!r}, '--backend', 'numpy', '--no-progress']) == 0\n"
            "print('loaded:', *(m for m in ('torch', 'mindspore') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "loaded:", out.stdout
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_wall_time_per_phase_leaves_out_the_pause_before_a_resume():
    records = [{"event": "start", "time": 100.0},
               {"event": "train", "phase": "a", "step": 1, "time": 110.0},
               {"event": "phase_end", "phase": "a", "time": 112.0},
               {"event": "train", "phase": "b", "step": 1, "time": 120.0},
               {"event": "state", "phase": "b", "time": 121.0},
               {"event": "interrupted", "phase": "b", "time": 130.0},  # moved here by the resume
               {"event": "resume", "phase": "b", "time": 1000.0},
               {"event": "augmented", "time": 1003.0},
               {"event": "train", "phase": "b", "step": 2, "time": 1010.0},
               {"event": "end", "time": 1011.0}]
    per_phase, other = _wall_times(records)
    assert per_phase == {"a": 12.0, "b": 8.0 + 1.0 + 9.0 + 7.0}
    assert other == 3.0 + 1.0
