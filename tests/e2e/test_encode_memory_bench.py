"""benchmarks/encode_memory.py on a few thousand real SST-2 rows: both sides encode the same ids
and the blocked encode holds less than one library batch over every row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.realdata


def test_encode_memory_benchmark_runs_and_blocks_hold_less(tmp_path):
    shared_path("data", "glue", "SST-2", "train.tsv")
    shared_path("models", "all-MiniLM-L6-v2", "vocab.txt")
    out = tmp_path / "encode_memory.json"
    # 3 blocks of the engine's 8,192 rows: enough that one batch's Encoding objects outweigh a block's
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "encode_memory.py"), "--rows", "24576",
                           "--threads", "1", "--output", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| peak resident memory |" in proc.stdout
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert [r["rows"] for r in runs["one_batch"] + runs["blocked"]] == [24576, 24576]
    assert runs["one_batch"][0]["ids_checksum"] == runs["blocked"][0]["ids_checksum"]
    medians = result["medians"]
    assert medians["blocked"]["encode_added_mb"] < medians["one_batch"]["encode_added_mb"]
