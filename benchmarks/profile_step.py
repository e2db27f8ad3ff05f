"""Profile one benchmark case of a torch implementation with torch.profiler: top ops by self CPU time.

    .venv/bin/python benchmarks/profile_step.py                          # torch backend, GD, MiniLM teacher
    .venv/bin/python benchmarks/profile_step.py --impl handwritten --phase td1 --teacher base12
    .venv/bin/python benchmarks/profile_step.py --impl torch,handwritten --batch-size 8 --length 64

Builds the case exactly as run.py does (same models, batches, optimiser), runs the warm-up, then
profiles `--steps` steps and prints the `--top` ops by self CPU time (and writes them to --out).
Only torch-based implementations (the hand-written loop, the "torch" backend) can be profiled here.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", default="torch", help='comma-separated: "torch", "handwritten"')
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
        text = profile(name, case, settings, args.steps, args.top)
        print(text, flush=True)
        path = args.out / (f"{name}-{case.key.replace('/', '-')}-b{settings.batch_size}-l{settings.length}"
                           f"-t{settings.threads}.txt")
        path.write_text(text)


if __name__ == "__main__":
    main()
