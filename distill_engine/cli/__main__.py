"""`python -m distill_engine.cli ...`: the `distill-engine` command."""

import sys

from distill_engine.cli.main import main

sys.exit(main())
