"""The run report and the TensorBoard files of whole torch runs: a tiny run (pictures, tables, event
files read back), an interrupted one (a partial report) and its resume, and a short real SST-2 run."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distill_engine.cli import main
from distill_engine.testing.fixtures import write_tiny_recipe
from tests.conftest import backend_installed, shared_path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PNG = b"\x89PNG\r\n\x1a\n"
# the tiny pipeline, shorter: teacher 8 steps, gd 3, td1 8, td2 8 (evaluated at 4 and 8)
SHORT = ["--set", "phases.teacher.epochs=1", "--set", "phases.td2.epochs=1", "--set", 'data.batching="fixed"',
         "--set", "run.tensorboard=true"]
TRAINED = {"teacher": ("teacher_finetune", 8, 0), "gd": ("general_distill", 3, 8),
           "td1": ("task_distill_intermediate", 8, 11), "td2": ("task_distill_prediction", 8, 19)}


pytestmark = pytest.mark.skipif(not backend_installed("torch"), reason="backend torch not installed")


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _check_pictures(report: Path, names: list[str]) -> None:
    """Exactly `names` (and README.md) in report/, each a PNG matplotlib reads back, linked from README.md."""
    from matplotlib.image import imread

    assert sorted(p.name for p in report.iterdir()) == sorted(["README.md", *names])
    text = (report / "README.md").read_text()
    for name in names:
        assert (report / name).read_bytes()[:8] == PNG
        height, width, _ = imread(report / name).shape
        assert height >= 300 and width >= 600, (name, height, width)
        assert f"]({name})" in text


def _tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every event file in `directory`, read record by record (the
    TFRecord framing: length, its CRC, the Event protobuf, its CRC), honouring purge_step as
    TensorBoard does (a later file's purge drops the earlier files' events from that step on)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                scalars = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in scalars.items()}
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def _phase_row(name: str, kind: str, status: str, steps: int) -> str:
    return rf"\| {name} \| {kind} \| {status} \| {steps} \| ([\d:]+|\d+\.\d s) \|"


def test_report_and_tensorboard_files_of_a_tiny_run(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    assert main(["run", str(recipe), "--backend", "torch", "--no-progress", *SHORT]) == 0
    run = tmp_path / "run"
    assert f"report written to {run / 'report' / 'README.md'}" in capsys.readouterr().out
    records = _records(run)
    assert all(isinstance(r.get("time"), float) for r in records)  # every record is timestamped

    _check_pictures(run / "report", [f"losses-{p}.png" for p in TRAINED] + ["dev.png", "confusion.png"])
    text = (run / "report" / "README.md").read_text()
    for name, (kind, steps, _) in TRAINED.items():
        end = next(r for r in records if r["event"] == "phase_end" and r["phase"] == name)
        if name in ("gd", "td1"):  # the prediction layer is not trained there: not evaluated
            assert end["dev"] is None and "classes" not in end
            assert re.search(_phase_row(name, kind, "finished", steps) + " - |", text)
            continue
        assert re.search(_phase_row(name, kind, "finished", steps) + f" accuracy {end['dev']['accuracy']:.4f}", text)
    assert "Not evaluated: gd, td1 (a phase that does not train the prediction layer" in text
    assert re.search(_phase_row("eval", r"evaluate \(student\)", "finished", 0), text)
    ckpt = re.search(r"\| checkpoint \| `(teacher/\w+)` \| `(td2/\w+)` \|", text)
    assert ckpt, text
    teacher = json.loads((run / ckpt.group(1) / "manifest.json").read_text())
    student = json.loads((run / ckpt.group(2) / "manifest.json").read_text())
    assert (f"| dev accuracy | {teacher['metrics']['accuracy']:.4f} | {student['metrics']['accuracy']:.4f} |"
            in text)
    assert "| shape | 4 layers, 16 wide, 4 heads, FFN 32 | 2 layers, 8 wide, 4 heads, FFN 16 |" in text
    assert re.search(r"\| inference speed \(sentences/s\) \| [\d,]+ \| [\d,]+ \([\d.]+x\) \|", text), text
    assert "measured with backend torch" in text

    # TensorBoard: every term, total and lr per phase, the dev metric, against the global step
    scalars = _tensorboard_scalars(run / "tensorboard")
    for name, (_, steps, offset) in TRAINED.items():
        train = [r for r in records if r["event"] == "train" and r["phase"] == name]
        terms = [k for k in train[0] if k not in ("event", "phase", "step", "epoch", "elapsed_s", "time")]
        assert "lr" in terms and "total" in terms
        for term in terms:
            got = scalars[f"{name}/{term}"]
            assert [s for s, _ in got] == [offset + r["step"] for r in train]
            np.testing.assert_allclose([v for _, v in got], [r[term] for r in train], rtol=1e-6)
    assert {"td1/attention_mse", "td1/embedding_mse", "td1/hidden_mse"} <= set(scalars)
    evals = [r for r in records if r["event"] == "eval"]
    assert [s for s, _ in scalars["dev/accuracy"]] == [TRAINED[r["phase"]][2] + r["step"] for r in evals] \
        == [8, 23, 27]
    np.testing.assert_allclose([v for _, v in scalars["dev/accuracy"]], [r["accuracy"] for r in evals], rtol=1e-6)


def test_an_interrupted_run_reports_what_it_has_and_its_resume_the_rest(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    run = tmp_path / "run"
    env = {**os.environ, "KILL_AT": json.dumps({"kind": "signal", "match": {"event": "train", "phase": "td1",
                                                                             "step": 3}})}
    command = ["run", str(recipe), "--backend", "torch", "--no-progress", *SHORT]
    proc = subprocess.run([sys.executable, str(HERE / "kill_at.py"), *command], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert not (run / "report").exists()  # written when a run finishes

    assert main(["report", str(run), "--no-speed"]) == 0
    capsys.readouterr()
    _check_pictures(run / "report", ["losses-teacher.png", "losses-gd.png", "losses-td1.png", "dev.png",
                                     "confusion.png"])
    text = (run / "report" / "README.md").read_text()
    assert "status **interrupted**" in text and "this report covers the phases and steps it logged so far" in text
    assert re.search(_phase_row("td1", "task_distill_intermediate", "unfinished", 3) + " - |", text)
    assert "| td2 | task_distill_prediction | not run | 0 | - | - |" in text
    assert re.search(r"\| checkpoint \| `teacher/\w+` \| `gd/final` \|", text)

    proc = subprocess.run([sys.executable, "-m", "distill_engine.cli", *command, "--resume"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    _check_pictures(run / "report", [f"losses-{p}.png" for p in TRAINED] + ["dev.png", "confusion.png"])
    text = (run / "report" / "README.md").read_text()
    assert "status **finished**" in text and "| resumes | 1 |" in text
    assert re.search(_phase_row("td1", "task_distill_intermediate", "finished", 8), text)
    # the interrupted attempt's events and the resumed one's: each step once
    scalars = _tensorboard_scalars(run / "tensorboard")
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert [s for s, _ in scalars["td1/total"]] == list(range(12, 20))
    assert [s for s, _ in scalars["dev/accuracy"]] == [8, 23, 27]


def test_a_student_that_answers_one_class_is_called_degenerate_in_the_output_and_the_report(tmp_path, capsys):
    """Every training label "1": the teacher learns to answer "1" for everything (a collapsed
    teacher), and so does the student it teaches. The run says so on stderr, and the report has
    the warning, the majority-class baseline, the per-class figures and the confusion matrices."""
    recipe = write_tiny_recipe(tmp_path)
    train = tmp_path / "glue" / "train.tsv"
    header, *rows = train.read_text().splitlines()
    train.write_text("\n".join([header] + [row.rsplit("\t", 1)[0] + "\t1" for row in rows]) + "\n")
    gold = [row.rsplit("\t", 1)[1] for row in (tmp_path / "glue" / "dev.tsv").read_text().splitlines()[1:]]
    n, ones = len(gold), gold.count("1")
    assert 0.5 < ones / n < 0.95  # "1" is the dev set's majority, not (almost) all of it
    assert main(["run", str(recipe), "--backend", "torch", "--no-progress", "--set", "phases.teacher.epochs=1",
                 "--set", "phases.td2.epochs=1", "--set", f'run.cache_dir="{tmp_path / "cache"}"']) == 0
    err = capsys.readouterr().err
    baseline = f"{ones / n:.4f}"
    for phase, model in (("teacher", "teacher"), ("td2", "student"), ("eval", "student")):
        line = (f'warning: [{phase}] the {model} looks degenerate: it predicts "1" for all {n} dev examples; its '
                f'accuracy {baseline} is at or below the majority-class baseline\'s {baseline} (always "1")')
        assert line in err.splitlines(), err
    run = tmp_path / "run"
    end = next(r for r in _records(run) if r["event"] == "phase_end" and r["phase"] == "eval")
    assert end["classes"] == {"labels": ["0", "1"], "matrix": [[0, n - ones], [0, ones]]}
    text = (run / "report" / "README.md").read_text()
    assert (f'> **Warning:** [eval] the student looks degenerate: it predicts "1" for all {n} dev examples; '
            in text)
    assert f'| dev accuracy of always "1" (majority-class baseline) | {baseline} | {baseline} |' in text
    assert f'The majority-class baseline (always "1") scores accuracy {baseline} on this dev set.' in text
    # per class: "0" never predicted (precision, recall, F1 0), "1" always
    f1 = 2 * (ones / n) / (ones / n + 1)
    assert f"| 0 | 0.0000 | 0.0000 | 0.0000 | {n - ones} | 0 |" in text
    assert f"| 1 | {baseline} | 1.0000 | {f1:.4f} | {ones} | {n} |" in text
    assert "![Confusion matrices](confusion.png)" in text and (run / "report" / "confusion.png").read_bytes()[:8] == PNG


@pytest.mark.realdata
def test_report_of_a_short_real_sst2_run(tmp_path, capsys):
    """The reduced run (docs/results.md) cut to 4 steps a phase, evaluated on 128 dev sentences (about a minute)."""
    train = shared_path("data", "glue", "SST-2", "train.tsv")
    teacher = shared_path("models", "all-MiniLM-L6-v2")
    dev = tmp_path / "dev.tsv"
    dev.write_text("".join(shared_path("data", "glue", "SST-2", "dev.tsv").read_text().splitlines(True)[:129]))
    sets = {"teacher.path": f'"{teacher}"', "data.train": f'"{train}"', "data.dev": f'"{dev}"',
            "data.batching": '"fixed"', "run.eval_batch_size": 32, "run.log_every": 1, "phases.td2.eval_every": 2,
            "teacher.dropout": 0, "teacher.attention_dropout": 0, "student.dropout": 0, "student.attention_dropout": 0}
    for phase in ("teacher", "td1", "td2"):
        sets |= {f"phases.{phase}.max_examples": 128, f"phases.{phase}.epochs": 1,
                 f"phases.{phase}.optimizer.lr": 1e-4 if phase == "teacher" else 5e-4}
    argv = ["run", str(ROOT / "recipes" / "tinybert_sst2.toml"), "--backend", "torch", "--no-progress",
            "--output-dir", str(tmp_path / "run")]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    capsys.readouterr()
    report = tmp_path / "run" / "report"
    _check_pictures(report, ["losses-teacher.png", "losses-td1.png", "losses-td2.png", "dev.png", "confusion.png"])
    text = (report / "README.md").read_text()
    assert "| shape | 6 layers, 384 wide, 12 heads, FFN 1536 | 4 layers, 312 wide, 12 heads, FFN 1200 |" in text
    # MiniLM-L6 with a 2-label head, and TinyBERT4 with its head (fit_dense left out)
    assert "| parameters | 22,713,986 | 14,350,874 (0.63x) |" in text, text
    assert re.search(r"\| dev accuracy \| 0\.\d{4} \| 0\.\d{4} \|", text)
    assert re.search(r"\| inference speed \(sentences/s\) \| [\d,]+ \| [\d,]+ \([\d.]+x\) \|", text), text
    assert "2 dev batches of 32 sentences (64 tokens long)" in text
    for phase, steps in (("teacher", 4), ("td1", 4), ("td2", 4)):
        assert re.search(rf"\| {phase} \| \w+ \| finished \| {steps} \| ", text)
