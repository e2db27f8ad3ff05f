"""benchmarks/throughput.py --quick on real SST-2, torch only, one phase: rows, ratios, targets."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")]


def test_quick_throughput_torch_td2(tmp_path):
    shared_path("data", "glue", "SST-2", "train.tsv")
    shared_path("models", "all-MiniLM-L6-v2", "config.json")
    out = tmp_path / "throughput"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends" / "torch"),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--quick", "--backends", "torch",
                           "--phases", "td2", "--variants", "fixed-64,bucketed,bucketed+cache,dynamic,bucketed+loop-opt", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    rows = {(r["implementation"], r["variant"]): r for r in result["results"]}
    assert set(rows) == {("torch", "fixed-64"), ("torch", "bucketed"), ("torch", "bucketed+cache"),
                         ("handwritten", "dynamic"), ("torch", "bucketed+loop-opt")}
    for key, r in rows.items():
        assert r["ok"], (key, r.get("error"))
        assert r["samples_per_s"] > 0 and r["real_tokens_per_s"] > 0 and 0 < r["efficiency"] < 1.5, (key, r)
    # the real length mix: fixed-64 batches are mostly padding, bucketed ones much less
    assert rows[("torch", "fixed-64")]["padding_share"] > 0.6 > rows[("torch", "bucketed")]["padding_share"]
    for key in (("torch", "bucketed"), ("torch", "bucketed+cache"), ("handwritten", "dynamic")):
        assert rows[key]["vs_fixed64"] > 0
    assert rows[("torch", "fixed-64")]["vs_handwritten"] > 0
    # the optimiser of before (its trainer refuses to be built if the kernel is not taken), paired
    assert rows[("torch", "bucketed")]["vs_loop_optimizer"] > 0
    assert "vs_loop_optimizer" not in rows[("torch", "bucketed+cache")]  # its twin was not asked for
    cached = rows[("torch", "bucketed+cache")]
    assert cached["prepass_rows_per_s"] > 0 and cached["prepass_taps"] == ["logits"]
    md = (out / "results.md").read_text()
    assert "| TD2 | torch | bucketed+cache |" in md and "- torch TD2 bucketed: " in md
    assert md.count("- PASS: ") + md.count("- MISS: ") >= 3  # the targets are checked, with figures
    # a partial run cannot project the whole recipe: it must say what is missing, not invent it
    after = result["projections"]["after (torch, bucketed + cache, fp32)"]
    assert after["total_s"] is None and "teacher bucketed" in after["missing"]
