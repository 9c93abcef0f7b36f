"""The agent's operation: when a request is a no-op, and that a failure moves nothing for good.

The processes here are real and really signalled; the kernel, not a stub, refuses a signal
across users. Puma itself is in tests/integration/test_agent_puma.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.operation import DONE, FAILED, IDLE, RESTARTING, Agent, Request, Status, settled
from agent.puma import parse_status_uids, signal_refused_message
from agent.release import Layout, install, links, switch
from tests.harness.puma_app import publish, release_archive

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


@pytest.mark.parametrize(("status", "current", "release", "no_op"), [
    (Status(IDLE), "v1", "v1", True),  # a new pod, already on the release asked for
    (Status(DONE, target="v2"), "v2", "v2", True),
    (Status(DONE, target="v2"), "v2", "v3", False),
    (Status(RESTARTING, target="v2"), "v1", "v1", False),
    # a failure that put everything back: the controller's rollback to v1 restarts nothing
    (Status(FAILED, target="v2", reverted=True, puma_restored=True), "v1", "v1", True),
    (Status(FAILED, target="v2", reverted=True, puma_restored=None), "v1", "v1", True),  # never signalled
    (Status(FAILED, target="v2"), "v1", "v1", True),  # failed before anything moved (a bad archive)
    (Status(FAILED, target="v2", reverted=True, puma_restored=False), "v1", "v1", False),  # Puma not back
    (Status(FAILED, target="v2", reverted=False), "v2", "v1", False),
    (Status(FAILED, target="v2", reverted=True, puma_restored=True), "v1", "v2", False),  # a retry is real
    (Status(FAILED, target="v1"), "v1", "v1", False),  # the last attempt at this very release failed
])
def test_a_request_is_a_no_op_only_when_the_release_is_served_as_it_should_be(
        status: Status, current: str, release: str, no_op: bool) -> None:
    assert settled(status, current, release) is no_op


def test_the_uid_of_a_process_is_read_from_its_status() -> None:
    text = "Name:\tpuma\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n"
    assert parse_status_uids(text) == (1000, 1000, 1000)
    assert parse_status_uids("Name:\tx\n") is None


def test_a_refused_signal_names_both_uids_and_the_fix() -> None:
    message = signal_refused_message("Puma", 20, 1000, 65532)
    assert message == ("not allowed to signal Puma (pid 20): it runs as uid 1000, the agent as uid 65532 without an "
                       "effective CAP_KILL; run the agent as uid 1000 (a capability added to a non-root container is "
                       "not effective)")


# --- real processes ----------------------------------------------------------------------------

@pytest.fixture
def volume() -> Iterator[Path]:
    """A world-readable directory (not under pytest's private tmp), so another uid can use it."""
    path = Path(tempfile.mkdtemp(prefix="cfo-agent-op-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def prepared(volume: Path) -> tuple[Layout, str]:
    """v1 current with v0 previous, and v2 published (not yet fetched)."""
    artifacts = volume / "artifacts"
    for release in ("v0", "v1", "v2"):
        publish(artifacts, release, release_archive(release))
    source = f"file://{artifacts}/{{release}}.tar.gz"
    layout = Layout(volume / "code")
    for release in ("v0", "v1"):
        install(layout, release, source)
        switch(layout, release)
    return layout, source


@pytest.fixture
def stand_in() -> Iterator[subprocess.Popen[bytes]]:
    """A real process standing where Puma would be, found through its pidfile."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_process_that_dies_of_the_signal_leaves_current_and_previous_as_they_were(
        volume: Path, stand_in: subprocess.Popen[bytes]) -> None:
    layout, source = prepared(volume)
    pidfile = volume / "puma.pid"
    pidfile.write_text(str(stand_in.pid))
    agent = Agent(AgentConfig.resolve(env={"CFO_CODE_PATH": str(layout.root), "CFO_PUMA_PIDFILE": str(pidfile)}))
    before = links(layout)
    assert agent.start(Request("v2", source, restart="hot", deadline_seconds=5)) is True
    agent.wait(30)
    status = agent.status()
    assert status["state"] == "failed" and "exited during the hot restart" in status["error"], status
    assert links(layout) == before and (status["release"], status["previous"]) == ("v1", "v0")
    assert (status["reverted"], status["puma_restored"]) == (True, False)
    assert "Puma (pid" in status["error"] and "is gone" in status["error"]
    # Puma did not come back: asking for v1 again is real work, not a no-op (here it finds no Puma).
    assert agent.start(Request("v1", source, restart="hot", deadline_seconds=5)) is True
    agent.wait(30)
    again = agent.status()
    assert again["state"] == "failed" and "Puma master not found" in again["error"] and links(layout) == before


def system_python() -> str | None:
    """An interpreter another uid can run (the venv's lives under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(candidate).exists():
            probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                                   capture_output=True, text=True)
            if probe.stdout.strip() == "True":
                return candidate
    return None


AS_ANOTHER_USER = """
import json, sys
from agent.config import AgentConfig
from agent.operation import Agent, Request
code, pidfile, source, restart = sys.argv[1:5]
agent = Agent(AgentConfig.resolve(env={"CFO_CODE_PATH": code, "CFO_PUMA_PIDFILE": pidfile,
                                       "CFO_PROCESS_PIDFILE": pidfile}))
agent.start(Request("v2", source, restart=restart, deadline_seconds=5))
agent.wait(30)
print(json.dumps(agent.status()))
"""


@pytest.mark.parametrize("restart", ["hot", "drain", "signal:HUP"])
def test_an_agent_that_may_not_signal_moves_nothing(volume: Path, stand_in: subprocess.Popen[bytes],
                                                    restart: str) -> None:
    """As on a kubelet where the agent runs as another uid than Puma, without an effective CAP_KILL."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the agent as another uid")
    python = system_python()
    if python is None:
        pytest.skip("no system Python >= 3.11 that another uid can run")
    layout, source = prepared(volume)
    pidfile = volume / "puma.pid"
    pidfile.write_text(str(stand_in.pid))
    for path in [layout.root, *layout.root.rglob("*")]:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    before = links(layout)
    done = subprocess.run([python, "-c", AS_ANOTHER_USER, str(layout.root), str(pidfile), source, restart],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, user=NOBODY, group=NOBODY,
                          env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout.splitlines()[-1])
    assert status["state"] == "failed", status
    assert f"pid {stand_in.pid}): it runs as uid 0, the agent as uid {NOBODY}" in status["error"]
    assert links(layout) == before and (status["release"], status["previous"]) == ("v1", "v0")
    assert status["reverted"] is None and status["puma_restored"] is None  # nothing had moved
    time.sleep(0.2)
    assert stand_in.poll() is None  # never signalled


def test_the_agents_release_logic_imports_on_an_early_python_311() -> None:
    """python_requires says >=3.11: nothing in the agent may need a later 3.11 (Debian's is 3.11.2).
    (agent.server needs `cryptography`, which that bare interpreter lacks; it uses nothing newer.)"""
    python = system_python()
    if python is None or sys.version_info[:2] != (3, 11):
        pytest.skip("no system Python 3.11 to try")
    done = subprocess.run([python, "-c", "import agent.operation, agent.cli, agent.worker, agent.archive, "
                           "agent.release, agent.tree, agent.fetch"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
