"""`python -m loadtests.bench ...`: see the package docstring."""

import sys

from loadtests.bench.cli import main

sys.exit(main())
