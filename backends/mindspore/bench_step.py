"""Time one TinyBERT general-distillation training step of the MindSpore backend, graph vs PyNative.

Teacher 6 layers / 384 hidden / 12 heads / 1536 intermediate; student 4 / 312 / 12 / 1200 with a
shared projection to 384; batch 32, length 128; attention_mse + embedding_mse + hidden_mse over the
uniform mapping; AdamW with global-norm clipping, dropout 0.1. Reports the median of `--steps` steps
after `--warmup` warm-up steps (the first includes compilation, reported separately).

    python backends/mindspore/bench_step.py                 # both modes, each in its own process
    python backends/mindspore/bench_step.py --mode graph --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def run_one(mode: str, steps: int, warmup: int, batch_size: int, length: int) -> dict:
    if mode == "pynative":
        os.environ["DISTILL_ENGINE_MS_PYNATIVE"] = "1"
    else:
        os.environ.pop("DISTILL_ENGINE_MS_PYNATIVE", None)
    import mindspore as ms

    from distill_engine.backend import TrainSpec
    from distill_engine.bert import BertConfig, init_parameters
    from distill_engine.device import Device
    from distill_engine.graph import build_graph, build_mapping
    from distill_engine.optim import OptimizerSpec
    from distill_engine_mindspore.backend import MindSporeBackend

    teacher_cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                             intermediate_size=1536)
    student_cfg = BertConfig(vocab_size=30522, hidden_size=312, num_hidden_layers=4, num_attention_heads=12,
                             intermediate_size=1200, projection="shared", projection_dim=384)
    backend = MindSporeBackend()
    teacher = backend.load_model(teacher_cfg, init_parameters(teacher_cfg, 1), Device("cpu"))
    student = backend.load_model(student_cfg, init_parameters(student_cfg, 2), Device("cpu"))
    mapping = build_mapping("uniform", 4, 6)
    graph = build_graph([("attention_mse", 1.0, 1.0), ("embedding_mse", 1.0, 1.0), ("hidden_mse", 1.0, 1.0)],
                        student_cfg, teacher_cfg, mapping, where="bench")
    total = warmup + steps
    spec = TrainSpec(graph=graph, optimizer=OptimizerSpec(), learning_rates=np.full(total, 5e-5, np.float32), seed=0)
    trainer = backend.trainer(student, teacher, spec)
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(0, teacher_cfg.vocab_size, (batch_size, length)).astype(np.int32),
        "token_type_ids": np.zeros((batch_size, length), np.int32),
        "attention_mask": np.ones((batch_size, length), np.int32),
    }
    times, losses = [], []
    for _ in range(total):
        start = time.perf_counter()
        out = trainer.step(batch)
        times.append(time.perf_counter() - start)
        losses.append(out["total"])
    return {"mode": mode, "mindspore": ms.__version__, "first_step_s": times[0],
            "median_step_s": statistics.median(times[warmup:]), "steps_s": times[warmup:],
            "loss_first": losses[0], "loss_last": losses[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("graph", "pynative", "both"), default="both")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print one JSON object per mode")
    args = parser.parse_args()
    if args.mode != "both":
        result = run_one(args.mode, args.steps, args.warmup, args.batch_size, args.length)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{result['mode']:>8}: median {result['median_step_s']:.3f} s/step over {args.steps} steps "
                  f"(first step incl. compilation {result['first_step_s']:.1f} s; "
                  f"loss {result['loss_first']:.4f} -> {result['loss_last']:.4f})")
        return
    for mode in ("graph", "pynative"):  # separate processes: MindSpore state never leaks between modes
        cmd = [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch-size", str(args.batch_size), "--length", str(args.length)] + (["--json"] if args.json else [])
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
