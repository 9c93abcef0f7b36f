"""`python -m customer_friendly.controller` is `cfo-controller`."""

import sys

from customer_friendly.controller.cli import main

sys.exit(main())
