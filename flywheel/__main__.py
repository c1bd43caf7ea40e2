"""`python -m flywheel`: the `flywheel` command line."""

import sys

from flywheel.cli import main

sys.exit(main())
