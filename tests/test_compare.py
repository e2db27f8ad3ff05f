"""`distill-engine compare`: runs side by side, from run directories written the way the runner
writes them (run.json, recipe.json, metrics.jsonl); bad input refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_engine.cli import main
from distill_engine.report.compare import MARKER, write_comparison
from distill_engine.rundir import RunDirError

PHASES = [{"name": "teacher_eval", "kind": "evaluate", "target": "teacher"},
          {"name": "td1", "kind": "task_distill_intermediate"},
          {"name": "td2", "kind": "task_distill_prediction"},
          {"name": "eval", "kind": "evaluate"}]


def _write_run(path: Path, backend: str, td1_totals: dict[int, float], td2_evals: dict[int, float],
               final: float | None, teacher: float = 0.9, metric: str = "accuracy", recipe: dict | None = None) -> Path:
    """A run directory as the runner leaves it: teacher scored, td1 and td2 logged, eval at the end
    (final None: the run stopped inside td2)."""
    path.mkdir(parents=True)
    t = 1000.0
    records = [{"event": "start", "time": t, "backend": backend},
               {"event": "phase_end", "phase": "teacher_eval", "kind": "evaluate", "steps": 0,
                "dev": {metric: teacher}, "time": t + 1}]
    for step, total in sorted(td1_totals.items()):
        records.append({"event": "train", "phase": "td1", "step": step, "epoch": 0, "total": total, "time": t + step})
    td1_steps = max(td1_totals)
    records.append({"event": "phase_end", "phase": "td1", "kind": "task_distill_intermediate", "steps": td1_steps,
                    "dev": {metric: 0.5}, "time": t + td1_steps + 1})
    t += td1_steps + 1
    for step, accuracy in sorted(td2_evals.items()):
        records.append({"event": "train", "phase": "td2", "step": step, "epoch": 0, "total": 0.2, "time": t + step})
        records.append({"event": "eval", "phase": "td2", "step": step, metric: accuracy, "time": t + step + 0.5})
    if final is not None:
        last = max(td2_evals)
        records.append({"event": "phase_end", "phase": "td2", "kind": "task_distill_prediction", "steps": last,
                        "dev": {metric: final, f"best_{metric}": final, "best_step": last}, "time": t + last + 1})
        records.append({"event": "phase_end", "phase": "eval", "kind": "evaluate", "steps": 0,
                        "dev": {metric: final}, "time": t + last + 2})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "run.json").write_text(json.dumps({"format": "distill-engine-run", "backend": backend,
                                               "status": "finished" if final is not None else "interrupted"}))
    (path / "recipe.json").write_text(json.dumps({"recipe": recipe or {"phases": PHASES,
                                                                       "teacher": {"path": "t", "format": "neutral"}}}))
    return path


def _pair(tmp_path: Path, other_totals=None, other_final=0.87):
    torch_run = _write_run(tmp_path / "torch", "torch", {50: 4.0, 100: 2.0, 150: 1.0}, {100: 0.85, 200: 0.86}, 0.86)
    ms_run = _write_run(tmp_path / "ms", "mindspore", other_totals or {50: 4.0, 100: 2.2, 150: 1.01},
                        {100: 0.85, 200: 0.87}, other_final)
    return torch_run, ms_run


def test_two_backends_side_by_side(tmp_path):
    torch_run, ms_run = _pair(tmp_path)
    out = tmp_path / "cmp"
    path, warnings = write_comparison([torch_run, ms_run], out, ["torch", "mindspore"])
    text = path.read_text()
    summary = json.loads((out / MARKER).read_text())
    rows = {r["label"]: r for r in summary["runs"]}
    assert rows["torch"]["student"] == 0.86 and rows["mindspore"]["student"] == 0.87
    assert rows["mindspore"]["teacher"] == 0.9 and abs(rows["mindspore"]["ratio"] - 0.87 / 0.9) < 1e-12
    assert rows["mindspore"]["backend"] == "mindspore" and rows["torch"]["steps"] == 150 + 200
    assert "| torch | torch | finished | accuracy | 0.9000 | 0.8600 (phase eval) | 95.6 % |" in text
    assert "| mindspore | mindspore | finished | accuracy | 0.9000 | 0.8700 (phase eval) | 96.7 % |" in text
    (gap,) = [g for g in summary["loss_gaps"]["mindspore"] if g["phase"] == "td1"]
    # 2.2 against 2.0 at step 100 is the largest gap (10 %), 1.01 against 1.0 the last (1 %)
    assert gap["steps"] == 3 and gap["at_step"] == 100 and abs(gap["max_rel_gap"] - 0.1) < 1e-12
    assert abs(gap["last_rel_gap"] - 0.01) < 1e-12 and abs(gap["median_rel_gap"] - 0.01) < 1e-12
    assert "| mindspore | td1 | 3 | 1.00 % | 10.00 % (100) | 1.00 % (150) |" in text
    assert "best 0.8700 at 200" in text
    if not warnings:  # matplotlib installed: the pictures are there and named in the README
        assert {p.name for p in out.glob("*.png")} == {"dev.png", "losses-td1.png", "losses-td2.png"}
        assert "](dev.png)" in text


def test_an_unfinished_run_shows_the_student_it_has_so_far(tmp_path):
    torch_run, _ = _pair(tmp_path)
    stopped = _write_run(tmp_path / "stopped", "torch", {50: 4.0, 100: 2.0}, {100: 0.84}, None)
    path, _ = write_comparison([torch_run, stopped], tmp_path / "cmp")
    summary = json.loads((tmp_path / "cmp" / MARKER).read_text())
    row = summary["runs"][1]
    assert row["label"] == "stopped" and row["status"] == "interrupted"
    assert row["student"] is None  # no checkpoint, no evaluate phase: nothing claimed
    assert "| eval | 0 steps, 1.0 s, accuracy 0.8600 | not run |" in path.read_text()
    assert ", unfinished |" in path.read_text()


def test_a_second_comparison_replaces_the_first(tmp_path):
    torch_run, ms_run = _pair(tmp_path)
    out = tmp_path / "cmp"
    write_comparison([torch_run, ms_run], out)
    write_comparison([ms_run, torch_run], out, ["a", "b"])
    assert json.loads((out / MARKER).read_text())["reference"] == "a"


@pytest.mark.parametrize("case, message", [
    ("one run", "two run directories or more"),
    ("labels", "1 --label value(s) for 2 run directories"),
    ("same label", "two runs are labelled 'x'"),
    ("same run", "the same run directory is given twice"),
    ("not a run", "holds no distill-engine run"),
    ("output of the user's", "holds no earlier comparison"),
    ("output is a run", "holds no earlier comparison"),
])
def test_bad_input_is_one_clear_error_and_nothing_is_written(tmp_path, case, message):
    torch_run, ms_run = _pair(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    runs, output, labels = [torch_run, ms_run], tmp_path / "cmp", None
    if case == "one run":
        runs = [torch_run]
    elif case == "labels":
        labels = ["x"]
    elif case == "same label":
        labels = ["x", "x"]
    elif case == "same run":
        runs = [torch_run, tmp_path / "." / "torch"]
    elif case == "not a run":
        runs = [torch_run, mine]
    elif case == "output of the user's":
        output = mine
    elif case == "output is a run":
        output = ms_run
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(RunDirError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_comparison(runs, output, labels)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "cmp").exists()


def test_the_command(tmp_path, capsys):
    torch_run, ms_run = _pair(tmp_path)
    assert main(["compare", str(torch_run), str(ms_run), "--output", str(tmp_path / "cmp"),
                 "--label", "torch", "--label", "mindspore"]) == 0
    assert f"comparison written to {tmp_path / 'cmp' / 'README.md'}" in capsys.readouterr().out
    assert main(["compare", str(torch_run), "--output", str(tmp_path / "cmp2")]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "two run directories or more" in err and len(err.strip().splitlines()) == 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.01, 100.0), min_size=1, max_size=12), st.lists(st.floats(0.5, 2.0), min_size=12,
                                                                          max_size=12))
def test_the_loss_gap_is_the_relative_difference_at_shared_steps(reference, factors):
    """Property: against itself a run has no gap; against a copy scaled by f at each step, the
    largest gap is max |f - 1| and it is found at that step."""
    import tempfile

    from distill_engine.report.compare import _loss_gaps
    from distill_engine.report.rundata import read_run

    with tempfile.TemporaryDirectory() as tmp:
        totals = {50 * (i + 1): v for i, v in enumerate(reference)}
        scaled = {s: v * factors[i] for i, (s, v) in enumerate(totals.items())}
        a = read_run(_write_run(Path(tmp) / "a", "torch", totals, {10: 0.8}, 0.8))
        b = read_run(_write_run(Path(tmp) / "b", "torch", scaled, {10: 0.8}, 0.8))
        (same,) = [g for g in _loss_gaps(a, a) if g["phase"] == "td1"]
        assert same["max_rel_gap"] == 0 and same["steps"] == len(reference)
        (gap,) = [g for g in _loss_gaps(a, b) if g["phase"] == "td1"]
        expected = [abs(scaled[s] - v) / v for s, v in totals.items()]
        assert gap["max_rel_gap"] == pytest.approx(max(expected), rel=1e-9)
        assert expected[list(totals).index(gap["at_step"])] == pytest.approx(max(expected), rel=1e-9)


def test_runs_scored_by_different_metrics_are_not_compared_on_one(tmp_path):
    """An MRPC run ranked by F1 beside an SST-2 run ranked by accuracy: one clear line, each row on
    its own metric, and (with matplotlib) a panel per metric rather than one shared axis."""
    a = _write_run(tmp_path / "sst2", "torch", {50: 1.0}, {100: 0.85}, 0.86)
    b = _write_run(tmp_path / "mrpc", "torch", {50: 1.0}, {100: 0.80}, 0.81, metric="f1")
    path, warnings = write_comparison([a, b], tmp_path / "cmp")
    text = path.read_text()
    summary = json.loads((tmp_path / "cmp" / MARKER).read_text())
    assert summary["metric"] is None and summary["ranked_by"] == {"sst2": "accuracy", "mrpc": "f1"}
    assert ("**The runs are scored by different metrics, none recorded by all** (`sst2`: accuracy; `mrpc`: f1): "
            "each row shows its run's own metric, and no score is compared across runs") in text
    assert "| sst2 | torch | finished | accuracy | 0.9000 | 0.8600 (phase eval) |" in text
    assert "| mrpc | torch | finished | f1 | 0.9000 | 0.8100 (phase eval) |" in text
    if not warnings:
        from matplotlib.image import imread

        height, _, _ = imread(tmp_path / "cmp" / "dev.png").shape
        assert height >= 2 * 4.2 * 100 * 0.95  # two panels, one a metric


def test_runs_that_record_a_metric_in_common_are_compared_on_it(tmp_path):
    """A run that ranks by f1 but also records accuracy is shown by accuracy beside an accuracy run."""
    a = _write_run(tmp_path / "a", "torch", {50: 1.0}, {100: 0.85}, 0.86)
    b = _write_run(tmp_path / "b", "torch", {50: 1.0}, {100: 0.80}, 0.81, metric="f1")
    log = b / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for r in records:  # b recorded accuracy too, after its f1
        if r["event"] == "phase_end" and r["dev"]:
            r["dev"]["accuracy"] = 0.75
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    path, _ = write_comparison([a, b], tmp_path / "cmp")
    text = path.read_text()
    assert json.loads((tmp_path / "cmp" / MARKER).read_text())["metric"] == "accuracy"
    assert ("Every run is compared on **accuracy**. (`b` ranks its checkpoints by f1: the accuracy it also "
            "recorded is shown, so like is compared with like.)") in text
    assert "| b | torch | finished | accuracy | 0.7500 | 0.7500 (phase eval) | 100.0 % |" in text


def test_the_recipes_differences_are_listed_by_phase_name(tmp_path):
    base = {"run": {"seed": 1, "output_dir": "runs/a"}, "teacher": {"path": "t", "format": "neutral"},
            "phases": [{"name": "td1", "kind": "task_distill_intermediate", "optimizer": {"lr": 5e-5}},
                       {"name": "td2", "kind": "task_distill_prediction", "optimizer": {"lr": 3e-5}}]}
    other = json.loads(json.dumps(base))
    other["run"]["output_dir"] = "runs/b"  # differs in every pair of runs: not listed
    other["phases"] = [dict(other["phases"][1], optimizer={"lr": 1e-4})]  # no td1; td2 at another lr
    a = _write_run(tmp_path / "full", "torch", {50: 1.0}, {100: 0.85}, 0.86, recipe=base)
    b = _write_run(tmp_path / "no_td1", "torch", {50: 1.0}, {100: 0.80}, 0.81, recipe=other)
    c = _write_run(tmp_path / "same", "torch", {50: 1.0}, {100: 0.80}, 0.81, recipe=base)
    path, _ = write_comparison([a, b, c], tmp_path / "cmp")
    text = path.read_text()
    diffs = {d["field"]: d["values"] for d in json.loads((tmp_path / "cmp" / MARKER).read_text())["recipe_differences"]}
    assert diffs == {"phases.td1.name": {"full": "td1", "no_td1": None, "same": "td1"},
                     "phases.td1.kind": {"full": "task_distill_intermediate", "no_td1": None,
                                         "same": "task_distill_intermediate"},
                     "phases.td1.optimizer.lr": {"full": 5e-5, "no_td1": None, "same": 5e-5},
                     "phases.td2.optimizer.lr": {"full": 3e-5, "no_td1": 1e-4, "same": 3e-5}}
    assert "| `phases.td2.optimizer.lr` | 3e-05 | 0.0001 | 3e-05 |" in text
    assert "| `phases.td1.optimizer.lr` | 5e-05 | - | 5e-05 |" in text
    path, _ = write_comparison([a, c], tmp_path / "cmp")
    assert "The runs' recipes are the same (`recipe.json`, `run.output_dir` aside)." in path.read_text()


def test_the_majority_baseline_stands_beside_each_runs_scores(tmp_path):
    """The issue's MRPC student, all 408 pairs "equivalent" (0.6838), beside its baseline, also 0.6838."""
    a = _write_run(tmp_path / "a", "torch", {50: 1.0}, {100: 0.85}, 279 / 408)
    log = a / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for r in records:
        if r["event"] == "phase_end" and r["phase"] == "eval":
            r["classes"] = {"labels": ["not_equivalent", "equivalent"], "matrix": [[0, 129], [0, 279]]}
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    b = _write_run(tmp_path / "b", "torch", {50: 1.0}, {100: 0.80}, 0.81)  # an older run: no matrix recorded
    path, _ = write_comparison([a, b], tmp_path / "cmp")
    text = path.read_text()
    assert "| student / teacher | majority-class baseline | steps |" in text
    assert "| a | torch | finished | accuracy | 0.9000 | 0.6838 (phase eval) | 76.0 % | 0.6838 |" in text
    assert "| b | torch | finished | accuracy | 0.9000 | 0.8100 (phase eval) | 90.0 % | - |" in text
