"""`python -m customer_friendly.certs` is `cfo-certs`."""

import sys

from customer_friendly.certs.cli import main

sys.exit(main())
