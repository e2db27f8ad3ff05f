"""The command line, `distill-engine` (`main`; the console script `distill_engine.cli:main`).

`main.py` builds the parser and runs a subcommand; each subcommand is a module of its own
(`run`, `validate`, `backends`, `losses`, `tasks`, `augment`, `export`, `predict`, `report`,
`compare`) with `add_parser(sub)` and `command(args)`. Command-line code lives here only: the
library modules it calls take plain values, not argparse namespaces.
"""

from distill_engine.cli.main import main

__all__ = ["main"]
