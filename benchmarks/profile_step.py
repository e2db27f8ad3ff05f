"""Profile one benchmark case: where a step's time goes, op by op.

    .venv/bin/python benchmarks/profile_step.py                          # torch backend, GD, MiniLM teacher
    .venv/bin/python benchmarks/profile_step.py --impl handwritten --phase td1 --teacher base12
    .venv/bin/python benchmarks/profile_step.py --impl torch,handwritten --batch-size 8 --length 64
    .venv/bin/python benchmarks/profile_step.py --impl mindspore --phase td1 --warmup 5

Builds the case exactly as run.py does (same models, batches, optimiser), runs the warm-up, then
profiles `--steps` steps and writes the table to --out as well as printing it:
- torch-based implementations (the hand-written loop, the "torch" backend): torch.profiler, the
  `--top` ops by self CPU time;
- mindspore: mindspore.Profiler's per-kernel times, summed by part of the step (teacher forward,
  student forward + losses, student backward, kernels MindSpore expanded from composite
  gradients, optimiser + clipping; told apart by the kernels' scope names) and by op type, then
  the `--top` single kernels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import attrs  # noqa: E402

from common import TEACHERS, Case, Settings  # noqa: E402
from workers import make_impl  # noqa: E402


def profile(impl_name: str, case: Case, settings: Settings, steps: int, top: int) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    impl = make_impl(impl_name, settings)
    impl.build(case)
    for _ in range(settings.warmup):
        impl.step(case)
    start = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(steps):
            impl.step(case)
    wall = (time.perf_counter() - start) / steps
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48)
    return (f"== {impl_name} {case.key}: batch {settings.batch_size}, length {settings.length}, "
            f"{steps} profiled steps, {wall * 1e3:.0f} ms/step under the profiler, torch threads "
            f"{torch.get_num_threads()}\n{table}")


def _ms_part(full_name: str) -> str:
    """Which part of a MindSpore step a kernel belongs to, from its scope name."""
    if full_name.startswith("Gradients/"):
        return "student backward"
    if full_name.startswith("Expand/"):
        return "expanded composite ops (" + full_name.split("/")[1].lstrip("_") + ")"
    if full_name.startswith("Default/objective"):
        return "student forward + losses"
    if full_name.startswith("Default/cell-BertCell"):
        return "teacher forward (separate inference graph)"
    return "optimiser + clipping"


def profile_mindspore(case: Case, settings: Settings, steps: int, top: int, work: Path) -> str:
    import csv
    import shutil
    from collections import Counter, defaultdict

    from mindspore import Profiler

    impl = make_impl("mindspore", settings)
    impl.build(case)
    for _ in range(settings.warmup):
        impl.step(case)
    shutil.rmtree(work, ignore_errors=True)
    prof = Profiler(output_path=str(work))
    start = time.perf_counter()
    for _ in range(steps):
        impl.step(case)
    wall = (time.perf_counter() - start) / steps
    prof.stop()
    prof.analyse()
    detail = sorted(work.glob("**/FRAMEWORK/cpu_op_detail_info_*.csv"))
    if not detail:
        raise SystemExit(f"error: mindspore.Profiler wrote no per-kernel table under {work}")
    parts, kinds, kernels = Counter(), defaultdict(Counter), []
    with detail[0].open() as f:
        for row in csv.DictReader(f):
            ms_total = float(row["op_total_time(ms)"]) / steps
            part = _ms_part(row["full_op_name"])
            parts[part] += ms_total
            kinds[part][row["op_type"]] += ms_total
            kernels.append((ms_total, row["op_type"], row["full_op_name"]))
    total = sum(parts.values())
    lines = [f"== mindspore {case.key}: batch {settings.batch_size}, length {settings.length}, {steps} profiled "
             f"steps, {wall * 1e3:.0f} ms/step wall under the profiler, {total:.0f} ms/step of kernel time",
             "", "| part of the step | ms/step | share | largest op types (ms/step) |", "|---|---:|---:|---|"]
    for part, t in parts.most_common():
        ops = ", ".join(f"{k} {v:.0f}" for k, v in kinds[part].most_common(6))
        lines.append(f"| {part} | {t:.0f} | {t / total:.0%} | {ops} |")
    lines += ["", f"top {top} kernels (ms/step):"]
    lines += [f"{t:8.1f}  {kind:16s} {name}" for t, kind, name in sorted(kernels, reverse=True)[:top]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", default="torch", help='comma-separated: "torch", "handwritten", "mindspore"')
    p.add_argument("--phase", default="gd", choices=("gd", "td1", "td2", "eval"))
    p.add_argument("--teacher", default="minilm6", choices=tuple(TEACHERS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "profiles")
    args = p.parse_args()
    settings = Settings(batch_size=args.batch_size, length=args.length, teachers=(args.teacher,), warmup=args.warmup,
                        check=False)
    if args.threads:
        settings = attrs.evolve(settings, threads=args.threads)
    else:
        import os

        settings = attrs.evolve(settings, threads=os.cpu_count())
    case = Case(args.phase, None if args.phase == "eval" else args.teacher)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in [n.strip() for n in args.impl.split(",") if n.strip()]:
        if name == "mindspore":
            text = profile_mindspore(case, settings, args.steps, args.top, args.out / "mindspore-profiler-data")
        else:
            text = profile(name, case, settings, args.steps, args.top)
        print(text, flush=True)
        path = args.out / (f"{name}-{case.key.replace('/', '-')}-b{settings.batch_size}-l{settings.length}"
                           f"-t{settings.threads}.txt")
        path.write_text(text)


if __name__ == "__main__":
    main()
