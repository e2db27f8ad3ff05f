"""benchmarks/gpu.py (the prepared first GPU run) and benchmarks/cache_fill.py, shrunk to the CPU
with --smoke, so that neither rots before a GPU runs them: every check of the GPU script passes on
the CPU (the quickstart's losses in bf16 against fp32, a SIGKILL and resume bit-identical with
dropout, the step timings with the cache on and off)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_script_passes_its_checks_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"] and report["machine"]["device"] == "cpu"
    runs = report["quickstart"]["runs"]
    assert set(runs) == {"cpu fp32 (base)", "cpu bf16"} and all(r["ok"] for r in runs.values())
    assert runs["cpu bf16"]["first"] != runs["cpu fp32 (base)"]["first"]  # bf16 really ran
    assert report["resume"]["ok"] and report["resume"]["tensors"] > 100
    timing = report["timing"]
    assert {f"{p} cache {c}" for p in ("gd", "td1", "td2") for c in ("on", "off")} | {"finetune fp32"} == set(timing)
    assert all(t["ms_per_step"] > 0 for t in timing.values())


def test_the_cache_fill_benchmark_runs_and_agrees_with_the_row_by_row_fill():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cache_fill.py"), "--smoke"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "smoke" in proc.stdout and "x" in proc.stdout.splitlines()[-1]
