"""`python -m controller` is `cfo-controller`."""

import sys

from controller.cli import main

sys.exit(main())
