"""`python -m customer_friendly.agent` is `cfo-agent`."""

import sys

from customer_friendly.agent.cli import main

sys.exit(main())
