"""`python -m flows.cli ...` is `instructue ...`."""

import sys

from flows.cli import main

sys.exit(main())
