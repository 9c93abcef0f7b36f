"""`python -m agent` is `cfo-agent`."""

import sys

from agent.cli import main

sys.exit(main())
