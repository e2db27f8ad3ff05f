"""Runs that read their teacher's outputs from the teacher-output cache, through the CLI.

A second run reuses the first's entries and computes exactly its numbers; a float32 cache
computes what the teacher computes every step (float32 rounding); a run killed while it builds
a cache resumes the build with its finished shards and ends where an uninterrupted run ends; a
SIGTERM during the build stops cleanly and says how to resume.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distill_engine.cli import main
from distill_engine.testing.fixtures import write_tiny_recipe
from tests.conftest import backend_installed

HERE = Path(__file__).resolve().parent


BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(not backend_installed(name), reason=f"backend {name} not installed"))
            for name in ("torch", "mindspore")]
# bucketed batches, position losses over real tokens: gd, td1 and td2 all cache
CACHING = ["--set", 'data.batching="bucketed"', "--set", "data.pad_to_multiple_of=4",
           "--set", "phases.gd.mask_padding=true", "--set", "phases.td1.mask_padding=true"]
OFF = [a for p in ("gd", "td1", "td2") for a in ("--set", f'phases.{p}.teacher_cache="off"')]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in _records(run):
        if r["event"] == "train":
            out.setdefault(r["phase"], []).append(r["total"])
    return out


def _cache_events(run: Path) -> dict[str, str]:
    return {r["phase"]: r["status"] for r in _records(run) if r["event"] == "teacher_cache"}


# torch only: the cache is the core's (building, keying, reusing, feeding the batches); a backend's
# side of it, training on a batch that carries the teacher's taps with the losses and steps of a
# trainer that runs the teacher, is the conformance suite's test_teacher_outputs_supplied_in_the_batch,
# run on every backend, and the quickstart test runs MindSpore from a real-data cache on every suite
# run. (This test on MindSpore compiled two whole pipelines: 4.8 of the suite's 75 worker-minutes.)
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.values == ("torch",)])
def test_runs_build_then_reuse_the_cache_and_match_the_uncached_run(backend, tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, words=(1, 10))
    cache = ["--set", f'run.cache_dir="{tmp_path / "cache"}"', "--set", 'run.cache_dtype="float32"']
    # no dropout: MindSpore's dropout kernels are not reproducible between runs in one process
    # (their generators live in the kernels), and the runs are compared step by step
    cache += [a for f in ("teacher.dropout", "teacher.attention_dropout", "student.dropout", "student.attention_dropout")
              for a in ("--set", f"{f}=0")]

    def run(name, *extra):
        assert main(["run", str(recipe), "--backend", backend, "--no-progress", "--output-dir", str(tmp_path / name),
                     *CACHING, *cache, *extra]) == 0
        return tmp_path / name

    first, uncached = run("a"), run("c", *OFF)
    assert "[td1] teacher cache built: " in capsys.readouterr().out
    assert _cache_events(first) == {"gd": "built", "td1": "built", "td2": "built"}
    assert _cache_events(uncached) == {}
    second = run("b")
    assert "[td1] teacher cache reused: " in capsys.readouterr().out
    assert _cache_events(second) == {"gd": "reused", "td1": "reused", "td2": "reused"}
    assert _losses(second) == _losses(first)  # the same entries: the same numbers, exactly
    # A float32 cache holds what the teacher computes in the step: the losses agree to float32
    # rounding (the pre-pass pads the teacher's batches differently; masked positions do not count).
    want = _losses(uncached)
    for phase, values in _losses(first).items():
        np.testing.assert_allclose(values, want[phase], rtol=1e-4, err_msg=phase)


def _kill_run(recipe: Path, out: Path, kill: dict, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_AT": json.dumps(kill)}
    cmd = [sys.executable, str(HERE / "kill_at.py"), "run", str(recipe), "--backend", "torch", "--no-progress",
           "--output-dir", str(out), *CACHING, *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not backend_installed("torch"), reason="backend torch not installed")
def test_a_run_killed_while_building_its_cache_resumes_the_build(tmp_path):
    """16 rows a shard: gd's 27 corpus rows make 2 shards, td1's 64 rows 4. SIGKILL after the
    process's 4th shard: td1's 2nd of 4."""
    recipe = write_tiny_recipe(tmp_path, words=(1, 10))
    killed_cache, clean_cache = tmp_path / "cache-killed", tmp_path / "cache-clean"
    kill = {"kind": "shard", "rows": 16, "n": 4}
    got = _kill_run(recipe, tmp_path / "killed", kill, "--set", f'run.cache_dir="{killed_cache}"')
    assert got.returncode == -signal.SIGKILL, got.stderr
    td1_entries = [p for p in killed_cache.iterdir() if not (p / "cache.json").exists()]
    assert len(td1_entries) == 1 and len(list(td1_entries[0].glob("shard-*"))) == 2  # gd: 2 shards; td1: 2 of 4
    resumed = _kill_run(recipe, tmp_path / "killed", {**kill, "n": None}, "--resume",
                        "--set", f'run.cache_dir="{killed_cache}"')
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the cache build" in resumed.stdout
    clean = _kill_run(recipe, tmp_path / "clean", {**kill, "n": None}, "--set", f'run.cache_dir="{clean_cache}"')
    assert clean.returncode == 0, clean.stderr
    statuses = [(r["phase"], r["status"]) for r in _records(tmp_path / "killed") if r["event"] == "teacher_cache"]
    assert ("td1", "resumed") in statuses
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "clean")


@pytest.mark.skipif(not backend_installed("torch"), reason="backend torch not installed")
def test_sigterm_while_building_the_cache_stops_cleanly(tmp_path):
    recipe = write_tiny_recipe(tmp_path, words=(1, 10))
    cache = ["--set", f'run.cache_dir="{tmp_path / "cache"}"']
    got = _kill_run(recipe, tmp_path / "run", {"kind": "shard", "rows": 16, "n": 3, "signal": True}, *cache)
    assert got.returncode == 128 + signal.SIGTERM, got.stderr
    assert "interrupted by SIGTERM in phase td1 while building its teacher-output cache" in got.stderr
    assert "--resume" in got.stderr
    done = _kill_run(recipe, tmp_path / "run", {"kind": "shard", "rows": 16}, "--resume", *cache)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"
