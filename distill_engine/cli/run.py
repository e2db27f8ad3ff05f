"""`distill-engine run RECIPE`: every phase of a recipe (`--nproc N`: through the backend's launcher).

Also the arguments `run` and `validate` share (the recipe, --backend, --set, ...) and the checked
plan both start from (`load_plan`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from distill_engine.errors import DistillError
from distill_engine.progress import DEFAULT_EVERY_S


def add_parser(sub) -> None:
    add_recipe_arguments(sub.add_parser("run", help="run every phase of a recipe"), "run")


def add_recipe_arguments(p, name: str) -> None:
    """The arguments `run` and `validate` share (`name`: which of the two)."""
    p.add_argument("recipe", type=Path, help="a recipe .toml file")
    p.add_argument("--backend", default=os.environ.get("DISTILL_ENGINE_BACKEND", "torch"),
                   help="backend plugin to use (see `distill-engine backends`; default torch)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set phases.td2.epochs=1 (repeatable)")
    p.add_argument("--output-dir", help="shortcut for --set run.output_dir=...")
    p.add_argument("--device", help='shortcut for --set run.device=... ("cpu", "gpu:0", "ascend:0")')
    # the run-wide caps are recipe fields (run.max_steps, run.max_examples), so recipe.json records
    # them and a resume with other caps is refused like any other change of the math
    p.add_argument("--max-steps", type=_positive_int, metavar="N",
                   help="cap every training phase at N steps (shortcut for --set run.max_steps=N)")
    p.add_argument("--max-examples", type=_positive_int, metavar="N",
                   help="cap every split at its first N examples: what each phase trains on, the dev split, "
                        "augment's input (shortcut for --set run.max_examples=N)")
    p.add_argument("--nproc", type=_positive_int, metavar="N",
                   help="data-parallel processes on this machine: starts the backend's launcher (torchrun, "
                        "msrun) with N copies of this command" if name == "run" else
                        "check the recipe for N data-parallel processes (batch sizes divide by N)")
    if name == "run":
        p.add_argument("--no-progress", action="store_true", help="no progress bar (and no progress lines)")
        p.add_argument("--progress-every", type=_seconds, default=DEFAULT_EVERY_S, metavar="SECONDS",
                       help="when stderr is not a terminal (a log file, nohup, CI): a progress line every SECONDS "
                            f"and at each phase end (default {DEFAULT_EVERY_S:g}; 0: none)")
        again = p.add_mutually_exclusive_group()
        again.add_argument("--resume", action="store_true",
                           help="continue the run in the output directory from its last run state "
                                "(starts it if there is none; the recipe must not change the math)")
        again.add_argument("--overwrite", action="store_true",
                           help="replace the run in the output directory (deletes its checkpoints)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number >= 0), got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds (a number >= 0), got {text}")
    return value


def _overrides(args) -> list[str]:
    extra = list(args.overrides)
    if args.output_dir:
        extra.append(f'run.output_dir="{args.output_dir}"')
    if args.device:
        extra.append(f'run.device="{args.device}"')
    if args.max_steps:
        extra.append(f"run.max_steps={args.max_steps}")
    if args.max_examples:
        extra.append(f"run.max_examples={args.max_examples}")
    return extra


def load_plan(args, *, join: bool = False):
    """The checked plan. `join`: this process may be one rank of a launched data-parallel run: its
    backend joins the launcher's process group first (distributed.join_process_group)."""
    from distill_engine.device import Device
    from distill_engine.distributed import join_process_group
    from distill_engine.plugins import get_backend
    from distill_engine.recipe import load_recipe
    from distill_engine.runner import plan

    notes: list[str] = []
    recipe = load_recipe(args.recipe, _overrides(args), resume=bool(getattr(args, "resume", False)), notes=notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr, flush=True)
    if not join:
        return plan(recipe, args.backend, world_size=args.nproc)
    args.group = join_process_group(get_backend(args.backend), Device.parse(recipe.run.device))
    return plan(recipe, args.backend, group=args.group)


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch_ranks(args) -> int:
    """`run --nproc N`: check the recipe once here (one error, not N), then run the backend's
    launcher with N copies of the command without --nproc, forwarding SIGTERM to it (Ctrl-C
    reaches it directly), and exit with its code. When it fails, the backend may name the rank
    that failed first from the launcher's logs (`Backend.launch_failure`, optional)."""
    import collections
    import signal
    import subprocess

    from distill_engine.distributed import NPROC_ENV
    from distill_engine.rundir import LAUNCHER_LOGS, RunDirectory

    p = load_plan(args)
    RunDirectory(p.recipe.run.output_dir).check_mode("resume" if args.resume else "overwrite" if args.overwrite else "new")
    launch = getattr(p.backend, "launch_command", None)
    if not callable(launch):
        raise DistillError(f'--nproc {args.nproc}: backend "{p.backend.name}" has no data-parallel launcher '
                           "(it implements no launch_command)")
    if p.augment is not None:  # augment here, once, rather than in rank 0 while the others wait on it
        from distill_engine.augment.job import run_job

        run_job(p.augment, progress=not args.no_progress, say=lambda text: print(text, file=sys.stderr, flush=True))
    log_dir = Path(p.recipe.run.output_dir) / LAUNCHER_LOGS
    command = launch(args.nproc, _without_nproc(args.argv), str(log_dir))
    print(f"launching {args.nproc} processes: {shlex.join(command)}", file=sys.stderr, flush=True)
    env = {**os.environ, NPROC_ENV: str(args.nproc)}  # the ranks' resume hint says --nproc N again
    # the launcher's stderr passes through here (and its last lines are kept for launch_failure)
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends Ctrl-C to the launcher and ranks too
    tail: collections.deque[str] = collections.deque(maxlen=400)
    for line in proc.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        tail.append(line)
    code = proc.wait()
    if code != 0:
        explain = getattr(p.backend, "launch_failure", None)
        why = explain(str(log_dir), list(tail)) if callable(explain) else None
        if why:
            print(f"error: {why}", file=sys.stderr, flush=True)
    return 128 - code if code < 0 else code


def command(args) -> int:
    from distill_engine.runner import Runner

    if args.nproc and args.nproc > 1:
        return launch_ranks(args)
    p = load_plan(args, join=True)
    mode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    runner = Runner(p, progress=False if args.no_progress else None, mode=mode, command=args.argv,
                    progress_every_s=args.progress_every)
    try:
        runner.run()
    finally:
        close = getattr(args.group, "close", None)  # a launched rank leaves its process group
        if callable(close):
            close()
    if not runner.finished_before and runner.primary:
        print(f"run written to {p.recipe.run.output_dir}")
    return 0
