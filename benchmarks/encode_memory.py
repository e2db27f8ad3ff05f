"""Memory of encoding a large training set: the engine's blocked `WordPieceTokenizer.encode` against
one library batch over every row (what `encode` did before 2026-12-04).

    .venv/bin/python benchmarks/encode_memory.py                  # the augmented SST-2 size, 1,070,966 rows
    .venv/bin/python benchmarks/encode_memory.py --rows 200000    # smaller, for a busy machine

The rows are SST-2's train.tsv (../shared) repeated to `--rows` and written to a temp TSV, so both
sides read it as the runner reads `train_aug` (`read_task_examples`), then encode it at
`--max-length` (64, the TD recipes'). Each side runs in a fresh process (`--reps` times, the sides
alternating), which reports its resident memory after reading, its peak (ru_maxrss) and the time
of the encode alone. Printed: both sides and the ratios blocked / one batch; written to `--output`
(a JSON file) when given. Why it matters: on 2026-12-04 the MindSpore TD run on the augmented set
held 12.9 GB resident beside a torch run's 8.7 GB on a 24 GB machine, and one of them was killed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SST2 = SHARED / "data" / "glue" / "SST-2" / "train.tsv"
VOCAB = SHARED / "models" / "all-MiniLM-L6-v2" / "vocab.txt"
SIDES = ("one_batch", "blocked")

CHILD = r"""
import json, resource, sys, time
import numpy as np
from distill_engine.data import WordPieceTokenizer, get_task, read_task_examples

side, path, vocab, max_length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

tok = WordPieceTokenizer(vocab, lowercase=True)
examples = read_task_examples(path, get_task("sst2"))
after_read = rss_mb()
start = time.perf_counter()
if side == "blocked":
    data = tok.encode(examples.text_a, examples.text_b, max_length, labels=examples.labels)
    ids = data.input_ids
else:  # the encode of before 2026-12-04: one library batch, then the arrays from the Encoding objects
    lib = tok._tok
    lib.enable_truncation(max_length, strategy="longest_first")
    lib.enable_padding(length=max_length, pad_id=tok.pad_id, pad_token="[PAD]", pad_type_id=0)
    encodings = lib.encode_batch(list(examples.text_a))
    ids = np.array([e.ids for e in encodings], dtype=np.int32)
    types = np.array([e.type_ids for e in encodings], dtype=np.int32)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int32)
    del encodings
seconds = time.perf_counter() - start
print(json.dumps({"side": side, "rows": len(examples), "after_read_mb": after_read,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "after_encode_mb": rss_mb(), "encode_s": seconds,
                  "ids_checksum": int(ids.astype(np.int64).sum())}))
"""


def write_rows(path: Path, rows: int) -> None:
    lines = SST2.read_text(encoding="utf-8").splitlines()
    header, body = lines[0], lines[1:]
    with path.open("w", encoding="utf-8") as f:
        f.write(header + "\n")
        for i in range(rows):
            f.write(body[i % len(body)] + "\n")


def run_side(side: str, path: Path, max_length: int, threads: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, side, str(path), str(VOCAB), str(max_length)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{side} failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_070_966, help="rows to encode (default: augmented SST-2's)")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--reps", type=int, default=1, help="fresh processes per side, alternating")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the tokenizer library's threads")
    ap.add_argument("--output", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    for need in (SST2, VOCAB):
        if not need.exists():
            raise SystemExit(f"needs {need} (the shared data beside the checkout)")
    results = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train_rows.tsv"
        write_rows(path, args.rows)
        for rep in range(args.reps):
            for side in SIDES if rep % 2 == 0 else reversed(SIDES):
                result = run_side(side, path, args.max_length, args.threads)
                results[side].append(result)
                print(f"  rep {rep + 1} {side:9s}: peak {result['peak_mb']:8.0f} MB, after read "
                      f"{result['after_read_mb']:7.0f} MB, encode {result['encode_s']:6.1f} s", flush=True)
    checks = {r["ids_checksum"] for side in SIDES for r in results[side]}
    if len(checks) != 1:
        raise SystemExit(f"the two sides encoded different token ids (checksums {sorted(checks)})")

    def med(side, key):
        return statistics.median(r[key] for r in results[side])

    summary = {side: {key: med(side, key) for key in ("after_read_mb", "peak_mb", "after_encode_mb", "encode_s")}
               for side in SIDES}
    for side in SIDES:  # what the encode itself added on top of the examples read
        summary[side]["encode_added_mb"] = summary[side]["peak_mb"] - summary[side]["after_read_mb"]
    ratios = {key: summary["blocked"][key] / summary["one_batch"][key]
              for key in ("peak_mb", "encode_added_mb", "encode_s")}
    print(f"\n{args.rows:,} rows of length {args.max_length}, {args.reps} rep(s) a side, medians "
          f"({platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.1f})")
    print("| | one batch (baseline) | blocked (engine) | blocked / one batch |")
    print("|---|---:|---:|---:|")
    print(f"| peak resident memory | {summary['one_batch']['peak_mb']:,.0f} MB | {summary['blocked']['peak_mb']:,.0f} MB"
          f" | {ratios['peak_mb']:.2f} |")
    print(f"| added by the encode (peak - after reading) | {summary['one_batch']['encode_added_mb']:,.0f} MB | "
          f"{summary['blocked']['encode_added_mb']:,.0f} MB | {ratios['encode_added_mb']:.2f} |")
    print(f"| encode time | {summary['one_batch']['encode_s']:.1f} s | {summary['blocked']['encode_s']:.1f} s"
          f" | {ratios['encode_s']:.2f} |")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"rows": args.rows, "max_length": args.max_length, "reps": args.reps,
                                           "threads": args.threads, "runs": results, "medians": summary,
                                           "ratios": ratios}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
