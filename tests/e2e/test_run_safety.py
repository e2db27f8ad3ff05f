"""A run's safety through the CLI (torch, tiny fixtures): used directories, changed recipes, finished
runs, divergence, and a real SIGINT from outside."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from distill_engine.cli import main
from distill_engine.testing.fixtures import register_loss_implementations_like, write_tiny_recipe


def _installed(name: str) -> bool:
    from distill_engine.plugins import backend_registry

    return name in backend_registry()


pytestmark = pytest.mark.skipif(not _installed("torch"), reason="backend torch not installed")
QUICK = ["--backend", "torch", "--no-progress", "--set", "phases.teacher.epochs=1", "--set", "phases.td2.epochs=1"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_used_directory_is_refused_then_resumed_then_overwritten(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    assert main(["run", str(recipe), *QUICK]) == 0
    first = json.loads((tmp_path / "run" / "run.json").read_text())
    assert first["status"] == "finished"
    before = (tmp_path / "run" / "td2" / "final" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["run", str(recipe), *QUICK]) == 2
    assert "holds another run" in _one_error_line(capsys)
    assert (tmp_path / "run" / "td2" / "final" / "model.safetensors").read_bytes() == before
    assert main(["run", str(recipe), *QUICK, "--resume"]) == 0
    assert "is finished" in capsys.readouterr().out
    assert main(["run", str(recipe), *QUICK, "--overwrite"]) == 0
    second = json.loads((tmp_path / "run" / "run.json").read_text())
    assert second["id"] != first["id"] and second["status"] == "finished"
    manifest = json.loads((tmp_path / "run" / "td1" / "final" / "manifest.json").read_text())
    assert manifest["run"] == {"id": second["id"], "seed": 1, "fingerprint": second["fingerprint"]}


def test_resume_refuses_a_recipe_that_changes_the_math(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    args = ["run", str(recipe), *QUICK, "--set", "run.checkpoint_every=2"]
    # stop it half-way: a SIGTERM sent by the run itself after td1's first step
    env_kill = {"kind": "signal", "match": {"event": "train", "phase": "td1", "step": 1}}
    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "kill_at.py"), *args],
                          env={**os.environ, "KILL_AT": json.dumps(env_kill)}, capture_output=True, text=True)
    assert proc.returncode == 143, proc.stderr
    assert main([*args, "--resume", "--set", "phases.td1.optimizer.lr=0.5", "--set", "run.log_every=3"]) == 2
    line = _one_error_line(capsys)
    assert "phases[2] (td1).optimizer.lr (0.001 -> 0.5)" in line and "log_every" not in line
    # fields that do not change the numbers may change
    assert main([*args, "--resume", "--set", "run.log_every=3"]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"


def _register_diverging(register_plugin, blow_up):
    """torch, but the trainer reports `blow_up(step, total)` as its loss from step 3 on."""
    from distill_engine.hookspecs import hookimpl
    from distill_engine_torch.backend import TorchBackend

    class Diverging(TorchBackend):
        name = "diverging"

        def trainer(self, student, teacher, spec):
            trainer = super().trainer(student, teacher, spec)
            step = trainer.step

            def diverging_step(batch):
                values = step(batch)
                if trainer.step_index >= 3:
                    values["total"] = blow_up(trainer.step_index, values["total"])
                return values

            trainer.step = diverging_step
            return trainer

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("diverging", Diverging)

        @hookimpl
        def register_loss_implementations(self, register):
            register_loss_implementations_like(register, "diverging", "torch")

    register_plugin(Plugin(), name="diverging")


@pytest.mark.parametrize("blow_up, says", [
    (lambda step, total: float("nan"), "the training loss became nan at step 3"),
    (lambda step, total: total * 10.0 ** (2 * step), "over 1000x its starting value"),
])
def test_divergence_stops_the_run_naming_phase_and_step(tmp_path, capsys, register_plugin, blow_up, says):
    _register_diverging(register_plugin, blow_up)
    recipe = write_tiny_recipe(tmp_path)
    assert main(["run", str(recipe), "--backend", "diverging", "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "phases[0] (teacher)" in line and says in line and "phases.teacher.optimizer.lr" in line, line
    assert not (tmp_path / "run" / "teacher" / "best").exists()  # nothing diverged is kept as best
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and says in info["error"]


def test_an_external_sigint_stops_after_the_step_and_says_how_to_resume(tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    cmd = [sys.executable, "-m", "distill_engine.cli", "run", str(recipe), *QUICK,
           "--set", "phases.teacher.max_steps=100000", "--set", "phases.teacher.epochs=1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and '"step": 20,' in log.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT in phase teacher" in err and "--resume" in err
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[-1]["event"] == "interrupted"
    assert any(r["event"] == "state" and r["phase"] == "teacher" for r in records)
