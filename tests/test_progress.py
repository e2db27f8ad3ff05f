"""Progress without a terminal (plain lines on stderr every N seconds and at each phase end), and the
name an interruption gives its signal."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from distill_engine.cli import main
from distill_engine.progress import ProgressLines, phase_progress
from distill_engine.runner import Runner
from distill_engine.testing.fixtures import write_tiny_recipe

LINE = re.compile(r"^\[(\w+)\] step (\d+)/(\d+) \(\d+ %\), loss [0-9.]+, [0-9.?]+ (steps/s|s/step), "
                  r"(done|\d+:\d\d(:\d\d)? left)$")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_line_every_interval_and_one_at_the_end_with_speed_and_time_left():
    clock, out = Clock(), io.StringIO()
    bar = ProgressLines(100, "td2", every_s=30, stream=out, clock=clock)
    for _ in range(10):  # 10 steps in 20 s: no line yet
        clock.now += 2
        bar.update(1)
        bar.set_postfix(loss="0.5000")
    assert out.getvalue() == ""
    for _ in range(5):  # the 15th step is 30 s in: 0.5 steps/s, 85 steps = 170 s left
        clock.now += 2
        bar.update(1)
    assert out.getvalue() == "[td2] step 15/100 (15 %), loss 0.5000, 2 s/step, 2:50 left\n"
    for _ in range(85):
        clock.now += 0.1
        bar.update(1)
    bar.close()
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("[td2] step 100/100 (100 %), loss 0.5000, ") and last.endswith(", done"), last
    bar.close()  # closing twice does not repeat the line
    assert out.getvalue().count("step 100/100") == 1


def test_a_resumed_phase_counts_only_the_steps_it_ran_for_its_speed():
    clock, out = Clock(), io.StringIO()
    bar = ProgressLines(1000, "teacher", initial=900, every_s=10, stream=out, clock=clock)
    clock.now += 10
    bar.update(5)  # 5 steps in 10 s, not 905
    assert out.getvalue() == "[teacher] step 905/1000 (90 %), 2 s/step, 3:10 left\n"


def test_a_terminal_gets_the_bar_and_no_progress_gets_nothing(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert isinstance(phase_progress(10, "td1", None), ProgressLines)
    assert not isinstance(phase_progress(10, "td1", None, every_s=0), ProgressLines)  # off
    assert not isinstance(phase_progress(10, "td1", False), ProgressLines)


def test_a_run_with_stderr_in_a_file_prints_progress_lines_during_training(tmp_path):
    """The issue's case: `distill-engine run ... 2> log` (a file, not a terminal) shows every
    training phase moving, with step/total, loss, speed and the time left, and its end."""
    recipe = write_tiny_recipe(tmp_path)
    log = tmp_path / "stderr.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as err:
        done = subprocess.run([sys.executable, "-m", "distill_engine.cli", "run", str(recipe), "--backend", "torch",
                               "--progress-every", "0.000001", "--set", "phases.teacher.epochs=1",
                               "--set", "phases.td2.epochs=1", "--set", f'run.cache_dir="{tmp_path / "cache"}"'],
                              stdout=subprocess.PIPE, stderr=err, text=True,
                              env=env, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    lines = [line for line in text.splitlines() if line.startswith("[")]
    assert lines and all(LINE.match(line) for line in lines), lines
    phases = {LINE.match(line).group(1) for line in lines}
    assert phases == {"teacher", "gd", "td1", "td2"}, phases
    # a line during the phase, not only at its end, and the end says done
    assert "[teacher] step 1/8 (12 %), loss " in text and re.search(r"\[teacher\] step 8/8 .*, done$", text, re.M)
    assert "\r" not in text  # no bar redraws in the file


def test_progress_every_is_checked(capsys):
    with pytest.raises(SystemExit):
        main(["run", "r.toml", "--progress-every", "-1"])
    assert "--progress-every: expected seconds (a number >= 0), got -1" in capsys.readouterr().err


@pytest.mark.parametrize("signum, converts, says", [
    (signal.SIGINT, False, "SIGINT"),
    (signal.SIGTERM, False, "SIGTERM"),
    (signal.SIGINT, True, "SIGINT"),
    (signal.SIGTERM, True, "SIGTERM (or Ctrl-C: mindspore turns a SIGINT during a step into SIGTERM)"),
])
def test_the_interruption_names_its_signal_and_what_a_framework_made_of_a_ctrl_c(signum, converts, says):
    backend = SimpleNamespace(name="mindspore", **({"sigint_as_sigterm": True} if converts else {}))
    stop = SimpleNamespace(name=signal.Signals(signum).name)
    assert Runner._signal_name(SimpleNamespace(stop=stop, plan=SimpleNamespace(backend=backend))) == says
