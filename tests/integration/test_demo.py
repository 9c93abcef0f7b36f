"""`make demo` runs in CI: its own real node, our images installed by cfo-admin, real Puma pods.

It sits here, not in tests/node, because only one real node runs at a time: this one starts and
stops before the session's node (tests/node) is started."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from testbed.controlplane import ROOT

pytestmark = pytest.mark.node


def test_the_demo_releases_under_load_with_no_failed_request_and_rolls_back_a_broken_release() -> None:
    env = {**os.environ, "CFO_NODE_WAIT": os.environ.get("CFO_NODE_WAIT", "1800")}  # one real node at a time
    result = subprocess.run([sys.executable, "-m", "testbed.demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=1200, check=False)
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-6000:]
    assert re.findall(r"^  requests failed\s+(\d+)", result.stdout, re.M) == ["0", "0"]
    assert re.findall(r"^  pods replaced\s+(\d+)", result.stdout, re.M) == ["0", "0"]
    assert re.findall(r"^  extra pods\s+(\d+)", result.stdout, re.M) == ["0", "0"]
    assert re.findall(r"^  container restarts\s+(\d+)", result.stdout, re.M) == ["0", "0"]
    assert re.findall(r"^  new ReplicaSets\s+(\d+)", result.stdout, re.M) == ["0", "0"]
    assert "Complete: all 3 running pods serve v2" in result.stdout
    assert "RolledBack: rolled back to v2" in result.stdout
    assert "Demo passed" in result.stdout
