"""A loss plugin outside the engine (tests/loss_plugin_example: Jensen-Shannon divergence between
the logits), installed with pip and found through its entry point, passes the conformance suite on
both backends and trains in a tiny run: what a third party's loss plugin goes through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill_engine.testing.fixtures import write_tiny_recipe

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "loss_plugin_example"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The example plugin pip-installed into a folder of its own, and the environment that sees it."""
    site = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(site), str(EXAMPLE)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert list(site.glob("distill_engine_loss_example-*.dist-info/entry_points.txt"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("DISTILL_ENGINE_PLUGINS", None)
    return env


def _run(argv, env, cwd=ROOT, timeout=900):
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_the_plugins_loss_is_listed_with_its_backends(installed):
    done = _run([str(BIN / "distill-engine"), "losses"], installed)
    assert done.returncode == 0, done.stderr
    assert ("jsd_logits\n    Jensen-Shannon divergence between the logits (DistillKit's JSD): reads logits; needs "
            "teacher; from plugin loss-example; backends: mindspore, torch") in done.stdout


@pytest.mark.slow
def test_the_plugin_passes_the_conformance_suite_on_both_backends(installed):
    # -n 0: one process (pyproject's addopts ask for xdist workers; this test already runs in one)
    done = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                 str(EXAMPLE / "check_conformance.py"), "-k", "each_loss or gradient or supplied"], installed)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "6 passed" in done.stdout, done.stdout[-1000:]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_the_plugins_loss_trains_a_student(installed, tmp_path, backend):
    recipe = write_tiny_recipe(tmp_path)
    done = _run([str(BIN / "distill-engine"), "run", str(recipe), "--backend", backend,
                 "--set", "phases.td2.losses=[{kind='jsd_logits', temperature=2.0}]",
                 "--set", "phases.gd.max_steps=1", "--set", "phases.td2.epochs=2"], installed)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    jsd = [r["jsd_logits"] for r in records if r.get("phase") == "td2" and "jsd_logits" in r]
    assert len(jsd) >= 4 and jsd[-1] < jsd[0], jsd
