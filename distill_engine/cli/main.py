"""The `distill-engine` command: run | validate | backends | losses | tasks | models | augment | export | predict | report | compare.

Every DistillError becomes one line on stderr ("error: ...") and a non-zero exit; tracebacks are
for bugs, not for bad input.
"""

from __future__ import annotations

import argparse
import sys

from distill_engine.cli import (augment, backends, compare, export, losses, models, predict, report, run, tasks,
                                validate)
from distill_engine.errors import DistillError

# the subcommands in the order `--help` lists them; each module has add_parser(sub) and command(args)
COMMANDS = {"run": run, "validate": validate, "backends": backends, "losses": losses, "tasks": tasks,
            "models": models, "augment": augment, "export": export, "predict": predict, "report": report, "compare": compare}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill-engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to print the command that resumes
    args.group = None  # set by a rank of a data-parallel run
    handler = COMMANDS[args.command].command
    from distill_engine.interrupt import RunInterrupted

    try:
        return handler(args)
    except RunInterrupted as exc:  # not an error: the run stopped where it was asked to
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except DistillError as exc:
        group = args.group
        rank = f"[rank {group.rank} of {group.world_size}] " if group is not None and group.world_size > 1 else ""
        print(f"error: {rank}{exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
