"""`python -m certs` is `cfo-certs`."""

import sys

from certs.cli import main

sys.exit(main())
