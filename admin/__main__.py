"""`python -m customer_friendly.admin` is `cfo-admin`."""

import sys

from customer_friendly.admin.cli import main

sys.exit(main())
