"""`python -m mlops.cli`: the `mlops` command."""

import sys

from mlops.cli.main import main

sys.exit(main())
