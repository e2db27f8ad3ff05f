"""How much of each training batch is padding, for every way the engine forms batches.

Reads a GLUE training file, encodes it exactly as the runner does (WordPiece, max_seq_length),
forms one epoch of batches as a training phase would (seed, epoch, batch size) and prints, for
each setting, the mean padded length per batch (columns), the tokens per batch (rows x columns),
the share of them that is padding, and the number of distinct batch shapes (a compiled backend
builds one graph per shape). Pure numpy and the engine's own batching: no framework is imported.

    .venv/bin/python benchmarks/padding_stats.py                       # SST-2 train, batch 32, length 64
    .venv/bin/python benchmarks/padding_stats.py --batch-size 32 --max-seq-length 128 --seed 43
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's distill_engine, whichever is installed

from distill_engine.data import (WordPieceTokenizer, batch_order, get_task, num_batches,  # noqa: E402
                                 padded_length, read_task_examples)

SHARED = ROOT.parent / "shared"
# (label, data.padding, data.batching, data.pad_to_multiple_of); the multiple is unused by the first
SETTINGS = (
    ("fixed, max_length", "max_length", "fixed", 16),
    ("fixed, longest / 16", "longest", "fixed", 16),
    ("fixed, longest / 8", "longest", "fixed", 8),
    ("bucketed / 16", "longest", "bucketed", 16),
    ("bucketed / 8", "longest", "bucketed", 8),
    ("bucketed / 1", "longest", "bucketed", 1),
)


def epoch_stats(lengths: np.ndarray, max_len: int, batches: list[np.ndarray], padding: str, multiple: int) -> dict:
    """Mean columns, tokens and padding share per batch, and distinct shapes, of one epoch's `batches`."""
    widths = np.array([max_len if padding == "max_length" else padded_length(int(lengths[b].max()), multiple, max_len)
                       for b in batches])
    rows = np.array([len(b) for b in batches])
    real = np.array([lengths[b].sum() for b in batches])
    tokens = rows * widths
    return {"batches": len(batches), "width": float(widths.mean()), "tokens": float(tokens.mean()),
            "padding": float(1 - real.sum() / tokens.sum()), "shapes": len(set(zip(rows.tolist(), widths.tolist())))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=SHARED / "data" / "glue" / "SST-2" / "train.tsv")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--vocab", type=Path, default=SHARED / "models" / "all-MiniLM-L6-v2" / "vocab.txt")
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=43, help="the phase's seed: run.seed + phase index (42 + 1: td1)")
    parser.add_argument("--epoch", type=int, default=0)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    task = get_task(args.task)
    examples = read_task_examples(args.train, task)
    data = WordPieceTokenizer(args.vocab).encode(examples.text_a, examples.text_b, args.max_seq_length)
    lengths = data.lengths
    print(f"{args.train}: {len(data)} sequences, {args.max_seq_length} max, real length mean {lengths.mean():.2f}, "
          f"median {np.median(lengths):.0f}, max {lengths.max()} ({(lengths >= args.max_seq_length).mean():.2%} "
          f"truncated); batch {args.batch_size}, seed {args.seed}, epoch {args.epoch}, "
          f"{num_batches(len(data), args.batch_size, False)} batches")
    print()
    print("| batches | padded length per batch | tokens per batch | padding | vs max_length | distinct shapes |")
    print("|---|---:|---:|---:|---:|---:|")
    base = None
    for label, padding, batching, multiple in SETTINGS:
        batches = batch_order(data, args.batch_size, shuffle=True, seed=args.seed, epoch=args.epoch, batching=batching)
        s = epoch_stats(lengths, args.max_seq_length, batches, padding, multiple)
        base = base or s["tokens"]
        print(f"| {label} | {s['width']:.2f} | {s['tokens']:.0f} | {s['padding']:.1%} | {s['tokens'] / base:.3f} "
              f"| {s['shapes']} |")
    print(f"\n(real tokens per batch: {lengths.sum() / num_batches(len(data), args.batch_size, False):.0f}; "
          f"{time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
