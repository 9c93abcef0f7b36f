"""For every test run: SIGTERM (a CI job cancelled, a timeout) unwinds like Ctrl-C, so that every
fixture's teardown runs and nothing the tests started is left running on the host."""

from __future__ import annotations

import signal
from types import FrameType

import pytest


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
