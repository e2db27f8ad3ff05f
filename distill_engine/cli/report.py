"""`distill-engine report RUN_DIR`: write a run's report (RUN_DIR/report/)."""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    r = sub.add_parser("report", help="write a run's report (RUN_DIR/report/: Markdown summary and plots)")
    r.add_argument("run_dir", type=Path, help="a run directory (run.output_dir)")
    r.add_argument("--no-speed", action="store_true", help="do not time the teacher and student on dev batches")
    r.add_argument("--backend", help="backend that times them (default: the run's)")
    r.add_argument("--device", help='device that times them (default: the run\'s run.device; "cpu", "gpu:0", ...)')


def command(args) -> int:
    from distill_engine.device import Device
    from distill_engine.plugins import get_backend
    from distill_engine.report import write_report

    path, warnings = write_report(args.run_dir, speed=not args.no_speed,
                                  backend=get_backend(args.backend) if args.backend else None,
                                  device=Device.parse(args.device) if args.device else None)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"report written to {path}")
    return 0
