"""`python -m circuitlang` runs the `circuitc` command line."""

import sys

from .cli import main

sys.exit(main())
