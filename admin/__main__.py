"""`python -m admin` is `cfo-admin`."""

import sys

from admin.cli import main

sys.exit(main())
