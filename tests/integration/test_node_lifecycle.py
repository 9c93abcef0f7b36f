"""The real node's harness leaves the host as it found it, also when interrupted, and fails at
once, with the log's tail, when a component it waits on has died.

Here rather than in tests/node: each test starts a real node of its own, which can only run
while the session's node (tests/node) is not up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.controlplane import ROOT
from testbed.node import BRIDGE, SYSCTLS, mounts_under, state_file

pytestmark = pytest.mark.node


def host_state(workdir: Path) -> dict[str, object]:
    """What the node changes on the host while it runs."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    chains = []
    for tool in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([tool], capture_output=True, text=True, check=True).stdout
        chains += [line.split()[0] for line in out.splitlines() if line.startswith((":KUBE-", ":CNI-"))]
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods"))
    sysctls = {key: Path("/proc/sys", key).read_text().strip() for key in SYSCTLS if Path("/proc/sys", key).exists()}
    return {"bridge": f" {BRIDGE}:" in links, "chains": sorted(chains), "cgroups": cgroups, "sysctls": sysctls,
            "mounts": mounts_under(workdir), "netns": sorted(os.listdir("/var/run/netns"))
            if os.path.isdir("/var/run/netns") else [], "workdir": workdir.exists()}


def start(mode: str, workdir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "CFO_NODE_WAIT": os.environ.get("CFO_NODE_WAIT", "1800")}
    return subprocess.Popen([sys.executable, "-m", "testbed.node", mode, str(workdir)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def lines_until(proc: subprocess.Popen[str], marker: str, timeout: float = 900) -> Iterator[str]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        yield line
        if marker in line or time.monotonic() > deadline:
            return


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_node_leaves_the_host_as_it_found_it(tmp_path: Path, signum: int) -> None:
    workdir = tmp_path / "node"
    before = host_state(workdir)
    proc = start("hold", workdir)
    output = "".join(lines_until(proc, "node up"))
    assert "node up" in output, output
    running = host_state(workdir)
    assert running["bridge"] and running["chains"] and running["cgroups"], running
    proc.send_signal(signum)
    rest, _ = proc.communicate(timeout=180)
    after = host_state(workdir)
    assert after == before, (output + rest)[-3000:]


def test_a_wait_on_a_dead_kubelet_fails_at_once_with_its_log(tmp_path: Path) -> None:
    workdir = tmp_path / "node"
    before = host_state(workdir)
    proc = start("lose-kubelet", workdir)
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 3, output[-3000:]
    failure = output[output.index("wait failed:"):]
    assert "kubelet died" in failure
    assert len(failure.splitlines()) > 3  # the kubelet's log tail came with it
    assert host_state(workdir) == before


@contextlib.contextmanager
def another_node_running() -> Iterator[None]:
    """Holds the machine's node lock, as a running node does, with a bridge of that name up (this
    test's own when no node left one): what a waiting node must leave alone."""
    path = state_file().with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # waits for a node of another session to stop
    made = subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], capture_output=True).returncode == 0
    try:
        yield
    finally:
        if made:
            subprocess.run(["ip", "link", "delete", BRIDGE], check=False)
        os.close(fd)


@pytest.mark.parametrize("how", ["gives up", "is interrupted"])
def test_a_node_waiting_for_another_leaves_that_one_alone(tmp_path: Path, how: str) -> None:
    """A waiting node that gives up, or is stopped while it waits, tears nothing down: the host's
    node state is the running node's (found by a session whose waiting run cut a running node's
    pods off the network)."""
    with another_node_running():
        before = host_state(tmp_path / "node")
        env = {**os.environ, "CFO_NODE_WAIT": "0" if how == "gives up" else "600"}
        proc = subprocess.Popen([sys.executable, "-m", "testbed.node", "hold", str(tmp_path / "node")], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if how == "is interrupted":
            output = "".join(lines_until(proc, "waiting up to", timeout=120))
            assert "waiting up to 600s for the other real node" in output, output
            proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0
        assert host_state(tmp_path / "node") == before, rest[-3000:]
        assert before["bridge"]
