"""The teacher-output cache's fill per batch (TeacherCache.outputs), before and after issue #32.

A step that reads its teacher's outputs from the cache first gathers each row's stored values into
padded batch arrays. Before #32 that was a Python loop over rows writing float32 arrays (kept here
as `rowwise_float32`, the baseline); now the hidden states are one row gather per shard and the
arrays stay float16 (the backends widen them on the device). This script builds a cache of random
taps (no teacher runs: the fill does not care what the numbers are) for a teacher's shape, then
times both fills over the same random batches and prints ms per batch and their ratio:

    python benchmarks/cache_fill.py                       # MiniLM-L6 (384 wide) 32x64 and BERT-base 32x128
    python benchmarks/cache_fill.py --smoke               # tiny shapes, seconds (the test runs this)

TD1's taps are read: the embeddings, every mapped layer's hidden states and attention scores
(4 student layers: teacher layers 3, 6, 9, 12 of BERT-base; 2, 4, 6 of MiniLM's 6 would map 3).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill_engine import teacher_cache  # noqa: E402
from distill_engine.bert import BertConfig  # noqa: E402
from distill_engine.data.encoded import EncodedDataset  # noqa: E402
from distill_engine.graph import TEACHER_PREFIX  # noqa: E402

SHAPES = {  # name: (layers, hidden, heads, batch, length, student layers)
    "minilm6-32x64": (6, 384, 12, 32, 64, 3),
    "bert-base-32x128": (12, 768, 12, 32, 128, 4),
    "smoke": (2, 16, 2, 4, 8, 2),
}


def rowwise_float32(cache: teacher_cache.TeacherCache, rows: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """TeacherCache.outputs as it was before #32: float32 arrays filled row by row (the baseline)."""
    rows = np.asarray(rows, np.int64)
    per = cache.manifest["shard_rows"]
    out = {}
    for tap in cache.taps:
        kind, width = teacher_cache.tap_width(tap, cache.config)
        shape = {"rows": (len(rows), width), "tokens": (len(rows), length, width),
                 "squares": (len(rows), width, length, length)}[kind]
        target = np.zeros(shape, np.float32)
        for b, row in enumerate(rows):
            shard, n = cache.shards[row // per][tap], int(cache.lengths[row])
            start = int(cache.starts[tap][row])
            if kind == "rows":
                target[b] = shard[row % per]
            elif kind == "tokens":
                target[b, :n] = shard[start:start + n * width].reshape(n, width)
            else:
                target[b, :, :n, :n] = shard[start:start + width * n * n].reshape(width, n, n)
        out[TEACHER_PREFIX + tap] = target
    return out


def build(root: Path, shape: str, rows: int) -> tuple[teacher_cache.TeacherCache, int, int]:
    layers, hidden, heads, batch, length, student = SHAPES[shape]
    config = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, max_position_embeddings=max(length, 8))
    rng = np.random.default_rng(0)
    lengths = rng.integers(max(2, length // 3), length + 1, rows)  # real lengths below the batch's
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    data = EncodedDataset(input_ids=mask * 5, token_type_ids=np.zeros_like(mask), attention_mask=mask)
    step = layers // student
    taps = ["embeddings"] + [f"hidden.{step * (i + 1)}" for i in range(student)] + \
        [f"attention.{step * (i + 1) - 1}" for i in range(student)]

    def forward(b):
        n, l = b["input_ids"].shape
        out = {"embeddings": rng.standard_normal((n, l, hidden), np.float32)}
        for t in taps[1:]:
            out[t] = (rng.standard_normal((n, heads, l, l), np.float32) if t.startswith("attention.")
                      else rng.standard_normal((n, l, hidden), np.float32))
        return out

    key = teacher_cache.cache_key(config, {}, data, taps, "float16")
    cache, _ = teacher_cache.build_or_open(root, key, data, config, forward, backend="numpy", progress=False,
                                           say=lambda _m: None)
    return cache, batch, length


def time_fill(fill, cache, batches, length, repeat: int) -> float:
    fill(cache, batches[0], length)  # page the shards in
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for rows in batches:
            fill(cache, rows, length)
        best = min(best, (time.perf_counter() - start) / len(batches))
    return best * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: checks the script runs (seconds)")
    parser.add_argument("--rows", type=int, default=256, help="rows in the cache (random lengths)")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    shapes = ["smoke"] if args.smoke else ["minilm6-32x64", "bert-base-32x128"]
    rows = 64 if args.smoke else args.rows
    print(f"{'teacher, batch':<20} {'before ms':>10} {'after ms':>9} {'ratio':>6}  (per batch; before: row by row "
          "into float32, after: TeacherCache.outputs)")
    for shape in shapes:
        with tempfile.TemporaryDirectory(prefix="distill-cache-fill-") as tmp:
            cache, batch, length = build(Path(tmp), shape, rows)
            rng = np.random.default_rng(1)
            batches = [rng.choice(rows, batch, replace=False) for _ in range(2 if args.smoke else args.batches)]
            new, old = cache.outputs(batches[0], length), rowwise_float32(cache, batches[0], length)
            for name in old:  # the same numbers: float16 values widen exactly
                assert np.array_equal(new[name].astype(np.float32), old[name]), name
            before = time_fill(rowwise_float32, cache, batches, length, 1 if args.smoke else args.repeat)
            after = time_fill(lambda c, r, n: c.outputs(r, n), cache, batches, length, 1 if args.smoke else args.repeat)
            print(f"{shape:<20} {before:>10.2f} {after:>9.2f} {before / after:>5.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
