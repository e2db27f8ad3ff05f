"""Data-parallel general distillation: samples/s of a GD step with 1 and 2 processes, per backend.

    .venv/bin/python benchmarks/data_parallel.py                  # both backends, ~10 min on 2 cores
    .venv/bin/python benchmarks/data_parallel.py --backends torch --steps 8

Each configuration is a real `distill-engine run recipes/tinybert_general.toml` (MiniLM teacher,
4x312 student, the wiki corpus at 128 tokens) for --steps steps of one global batch (--batch,
default 32), logging every step; the rate is the global batch over the median step time after
--skip steps (compilation, warm-up), from the `elapsed_s` of metrics.jsonl:

Batches are `data.batching = "fixed"` (every step 128 tokens long, as the originals' GD): one
shape, so a compiling backend compiles once and every timed step is the same work.

- 1 process, 1 thread (the baseline of the ratios);
- 2 processes, 1 thread each (`--nproc 2`: torchrun / msrun), the same global batch;
- 1 process, 2 threads (what the machine gives one process without data parallelism).

The all-reduce's share of a 2-process step: the same launcher starts two workers of this file
(`--allreduce-worker`) that time the framework's all-reduce of a float32 buffer as large as the
student's trainable gradients (median of 10), divided by the 2-process step time. Prints a
table and writes results.json / results.md to --out (default benchmarks/results/data_parallel).
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
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tinybert_general.toml"
BIN = Path(sys.executable).parent


def _env(threads: int) -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "DISTILL_ENGINE_MS_KERNEL_THREADS": str(threads)}
    return env


def run_config(backend: str, nproc: int, threads: int, args, work: Path) -> dict:
    out = work / f"{backend}-{nproc}p{threads}t"
    cmd = [str(BIN / "distill-engine"), "run", str(RECIPE), "--backend", backend, "--output-dir", str(out),
           "--no-progress", "--set", f"phases.gd.max_steps={args.steps}", "--set", f"phases.gd.batch_size={args.batch}",
           "--set", "run.log_every=1", "--set", "run.checkpoint_minutes=0", "--set", 'data.batching="fixed"',
           "--set", "student.dropout=0",
           "--set", "student.attention_dropout=0"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{backend} {nproc} process(es): exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    elapsed = [r["elapsed_s"] for r in records if r["event"] == "train" and r["phase"] == "gd"]
    steps = np.diff([0.0, *elapsed])[args.skip:]
    step_s = float(statistics.median(steps))
    return {"backend": backend, "processes": nproc, "threads": threads, "step_s": step_s,
            "samples_per_s": args.batch / step_s, "steps_timed": len(steps), "wall_s": round(wall, 1),
            "first_steps_s": [round(float(x), 2) for x in np.diff([0.0, *elapsed])[: args.skip]]}


def trainable_gradient_floats() -> int:
    """The student's parameters GD updates (the pooler and classifier get no gradient)."""
    from distill_engine.bert import BertConfig, parameter_shapes
    from distill_engine.graph import build_graph, build_mapping
    from distill_engine.graph.dependencies import used_parameters

    # recipes/tinybert_general.toml's student and the MiniLM teacher
    config = BertConfig(vocab_size=30522, hidden_size=312, num_hidden_layers=4, num_attention_heads=12,
                        intermediate_size=1200, projection="shared", projection_dim=384)
    teacher = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                         intermediate_size=1536)
    graph = build_graph([("attention_mse", 1.0, 1.0), ("embedding_mse", 1.0, 1.0), ("hidden_mse", 1.0, 1.0)], config,
                        teacher, build_mapping("uniform", 4, 6), where="bench")
    used = used_parameters(config, graph)
    return int(sum(np.prod(s) for n, s in parameter_shapes(config).items() if n in used))


def allreduce_share(backend: str, step_s: float, floats: int, work: Path) -> float:
    out = work / f"allreduce-{backend}.json"
    me = str(Path(__file__).resolve())
    if backend == "torch":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", me,
               "--allreduce-worker", backend, "--floats", str(floats), "--result", str(out)]
    else:
        cmd = [str(BIN / "msrun"), "--worker_num=2", "--local_worker_num=2", f"--log_dir={work / 'msrun-logs'}",
               "--join=True", me, "--allreduce-worker", backend, "--floats", str(floats), "--result", str(out)]
    done = subprocess.run(cmd, env=_env(1), capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"all-reduce worker ({backend}) failed: {done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    seconds = json.loads(out.read_text())["seconds"]
    return seconds, seconds / step_s


def allreduce_worker(backend: str, floats: int, result: Path) -> None:
    from distill_engine.device import Device
    from distill_engine.plugins import get_backend

    group = get_backend(backend).process_group(Device("cpu"))
    times = []
    if backend == "torch":
        import torch
        import torch.distributed as dist

        buf = torch.ones(floats, dtype=torch.float32)
        for i in range(12):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(buf)
            times.append(time.perf_counter() - t0)
    else:
        import mindspore as ms
        from mindspore import Tensor

        from distill_engine_mindspore.backend import _AllSum

        # the compiled AllReduce (the eager comm_func.all_reduce has no CPU kernel in 2.10)
        all_reduce = ms.jit(_AllSum())
        buf = Tensor(np.ones(floats, np.float32))
        all_reduce(buf).asnumpy()  # compile
        for i in range(12):
            group.all_sum(np.zeros(1))
            t0 = time.perf_counter()
            all_reduce(buf).asnumpy()
            times.append(time.perf_counter() - t0)
    if group.rank == 0:
        result.write_text(json.dumps({"seconds": statistics.median(times[2:])}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="torch,mindspore")
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--skip", type=int, default=4, help="first steps not timed (compilation, warm-up)")
    p.add_argument("--batch", type=int, default=32, help="global batch (sequences of 128 tokens)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "data_parallel")
    p.add_argument("--allreduce-worker", help=argparse.SUPPRESS)
    p.add_argument("--floats", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.allreduce_worker:
        allreduce_worker(args.allreduce_worker, args.floats, args.result)
        return
    floats = trainable_gradient_floats()
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="distill-dp-bench-") as tmp:
        work = Path(tmp)
        for backend in args.backends.split(","):
            results = {}
            for nproc, threads in ((1, 1), (2, 1), (1, 2)):
                r = run_config(backend, nproc, threads, args, work)
                results[(nproc, threads)] = r
                print(f"{backend}: {nproc} process(es) x {threads} thread(s): {r['step_s']:.3f} s/step, "
                      f"{r['samples_per_s']:.1f} samples/s (first steps {r['first_steps_s']})", flush=True)
            seconds, share = allreduce_share(backend, results[(2, 1)]["step_s"], floats, work)
            base = results[(1, 1)]["samples_per_s"]
            for r in results.values():
                r["vs_1_process_1_thread"] = r["samples_per_s"] / base
            results[(2, 1)]["allreduce_s"] = seconds
            results[(2, 1)]["allreduce_share"] = share
            rows.extend(results.values())
            print(f"{backend}: all-reduce of {floats} float32 gradients over 2 ranks: {seconds * 1000:.1f} ms, "
                  f"{share:.1%} of a 2-process step", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"command": " ".join(["benchmarks/data_parallel.py", *sys.argv[1:]]), "date": started,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)], "global_batch": args.batch,
           "sequence_length": 128, "gradient_floats": floats, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(doc, indent=1))
    lines = [f"# Data-parallel GD step (distill-engine run recipes/tinybert_general.toml)", "",
             f"Command: `.venv/bin/python {doc['command']}`  ", f"Date: {started}; load average {doc['load_average']}  ",
             f"Global batch {args.batch} x 128 tokens; median step over {args.steps - args.skip} steps after {args.skip}.",
             "", "| backend | processes x threads | s/step | samples/s | vs 1 process x 1 thread | all-reduce (ms) | all-reduce share |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ar = f"{r['allreduce_s'] * 1000:.1f}" if "allreduce_s" in r else "–"
        sh = f"{r['allreduce_share']:.1%}" if "allreduce_share" in r else "–"
        lines.append(f"| {r['backend']} | {r['processes']} x {r['threads']} | {r['step_s']:.3f} | {r['samples_per_s']:.1f} | "
                     f"{r['vs_1_process_1_thread']:.2f} | {ar} | {sh} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
