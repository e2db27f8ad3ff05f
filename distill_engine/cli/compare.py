"""`distill-engine compare RUN_DIR... --output DIR`: several runs side by side."""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="several runs side by side (OUTPUT/README.md, comparison.json and plots): "
                                       "two backends, or ablations")
    c.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                   help="run directories; the first is the reference the others' training losses are compared with")
    c.add_argument("--output", type=Path, required=True,
                   help="directory to write (new, or an earlier comparison, which is replaced)")
    c.add_argument("--label", action="append", help="a name per run, in order (default: the directories' names)")


def command(args) -> int:
    from distill_engine.report.compare import write_comparison

    path, warnings = write_comparison(args.run_dirs, args.output, args.label)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"comparison written to {path}")
    return 0
