"""The agent's operation: when a request is a no-op, and that a failure moves nothing for good.

The processes here are real and really signalled; the kernel, not a stub, refuses a signal
across users. Puma itself is in tests/integration/test_agent_puma.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from customer_friendly.agent import journal, operation
from customer_friendly.agent.config import AgentConfig
from customer_friendly.agent.operation import Agent, settled
from customer_friendly.agent.puma import parse_status_uids, signal_refused_message
from customer_friendly.agent.release import Layout, install, links, switch
from customer_friendly.contract.agent_api import (
    DONE,
    FAILED,
    IDLE,
    RESTARTING,
    AgentStatus,
    ReleaseRequest,
    RestartOptions,
)
from testbed.product_copy import copy_product
from testbed.puma_app import publish, release_archive

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


@pytest.mark.parametrize(("status", "current", "release", "no_op"), [
    (AgentStatus(IDLE), "v1", "v1", True),  # a new pod, already on the release asked for
    (AgentStatus(DONE, target="v2"), "v2", "v2", True),
    (AgentStatus(DONE, target="v2"), "v2", "v3", False),
    (AgentStatus(RESTARTING, target="v2"), "v1", "v1", False),
    # a failure that put everything back: the controller's rollback to v1 restarts nothing
    (AgentStatus(FAILED, target="v2", reverted=True, puma_restored=True), "v1", "v1", True),
    (AgentStatus(FAILED, target="v2", reverted=True, puma_restored=None), "v1", "v1", True),  # never signalled
    (AgentStatus(FAILED, target="v2"), "v1", "v1", True),  # failed before anything moved (a bad archive)
    (AgentStatus(FAILED, target="v2", reverted=True, puma_restored=False), "v1", "v1", False),  # Puma not back
    (AgentStatus(FAILED, target="v2", reverted=False), "v2", "v1", False),
    (AgentStatus(FAILED, target="v2", reverted=True, puma_restored=True), "v1", "v2", False),  # a retry is real
    (AgentStatus(FAILED, target="v1"), "v1", "v1", False),  # the last attempt at this very release failed
])
def test_a_request_is_a_no_op_only_when_the_release_is_served_as_it_should_be(
        status: AgentStatus, current: str, release: str, no_op: bool) -> None:
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
        volume: Path, stand_in: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    layout, source = prepared(volume)
    pidfile = volume / "puma.pid"
    pidfile.write_text(str(stand_in.pid))
    agent = Agent(AgentConfig.from_env(env={"CFO_CODE_PATH": str(layout.root), "CFO_PUMA_PIDFILE": str(pidfile)}))
    before = links(layout)
    assert agent.start(ReleaseRequest("v2", source, RestartOptions(restart="hot", deadline_seconds=5))) is True
    agent.wait(30)
    status = agent.status()
    assert status["state"] == "failed" and "exited during the hot restart" in status["error"], status
    assert links(layout) == before and (status["release"], status["previous"]) == ("v1", "v0")
    assert (status["reverted"], status["puma_restored"]) == (True, False)
    assert "Puma (pid" in status["error"] and "is gone" in status["error"]
    assert status["signalled"] == {"v2": 1}  # the master died of it: there was nothing to bring back
    # Puma did not come back: asking for v1 again is real work, not a no-op (here it finds no Puma,
    # once it has waited for one to start again).
    monkeypatch.setattr(operation, "PUMA_RETURN_SECONDS", 1.0)
    assert agent.start(ReleaseRequest("v1", source, RestartOptions(restart="hot", deadline_seconds=5))) is True
    agent.wait(30)
    again = agent.status()
    assert again["state"] == "failed" and "Puma master not found" in again["error"] and links(layout) == before
    assert again["signalled"] == {"v2": 1} and again["asked"] == {"v2": 1, "v1": 1}


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
from customer_friendly.agent.config import AgentConfig
from customer_friendly.agent.operation import Agent
from customer_friendly.contract.agent_api import ReleaseRequest, RestartOptions
code, pidfile, source, restart = sys.argv[1:5]
agent = Agent(AgentConfig.from_env(env={"CFO_CODE_PATH": code, "CFO_PUMA_PIDFILE": pidfile,
                                       "CFO_PROCESS_PIDFILE": pidfile}))
agent.start(ReleaseRequest("v2", source, RestartOptions(restart=restart, deadline_seconds=5)))
agent.wait(30)
print(json.dumps(agent.status()))
"""


@pytest.mark.parametrize("restart", ["hot", "drain", "signal:HUP"])
def test_an_agent_that_may_not_signal_moves_nothing(volume: Path, stand_in: subprocess.Popen[bytes],
                                                    restart: str) -> None:
    """As on a kubelet where the agent runs as another uid than Puma, without an effective CAP_KILL."""
    if os.geteuid() != 0:
        pytest.fail("needs root to run the agent as another uid (make test runs as root, like the real node)")
    python = system_python()
    if python is None:
        pytest.fail("no system Python >= 3.11 that another uid can run: make test installs Debian's python3")
    layout, source = prepared(volume)
    pidfile = volume / "puma.pid"
    pidfile.write_text(str(stand_in.pid))
    for path in [layout.root, *layout.root.rglob("*")]:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    before = links(layout)
    # The checkout may sit in a directory only root can enter (a CI clone in a 0700 temp dir):
    # the other uid gets its own readable copy of what the agent imports.
    code = volume.parent / f"{volume.name}-code"
    copy_product(code)
    try:
        done = subprocess.run([python, "-c", AS_ANOTHER_USER, str(layout.root), str(pidfile), source, restart],
                              cwd=code, capture_output=True, text=True, timeout=60, user=NOBODY, group=NOBODY,
                              env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    finally:
        shutil.rmtree(code, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout.splitlines()[-1])
    assert status["state"] == "failed", status
    assert f"pid {stand_in.pid}): it runs as uid 0, the agent as uid {NOBODY}" in status["error"]
    assert links(layout) == before and (status["release"], status["previous"]) == ("v1", "v0")
    assert status["reverted"] is None and status["puma_restored"] is None  # nothing had moved
    time.sleep(0.2)
    assert stand_in.poll() is None  # never signalled


def test_the_agents_release_logic_imports_on_an_early_python_311(tmp_path: Path) -> None:
    """python_requires says >=3.11: nothing in the agent may need a later 3.11 (Debian's is 3.11.2).
    (agent.server needs `cryptography`, which that bare interpreter lacks; it uses nothing newer.)"""
    python = system_python()
    if python is None or sys.version_info[:2] != (3, 11):
        pytest.fail("no system Python 3.11 to try: make test installs Debian's python3")
    code = copy_product(tmp_path / "code")
    modules = ", ".join(f"customer_friendly.agent.{name}"
                        for name in ("operation", "cli", "worker", "archive", "release", "tree", "fetch"))
    done = subprocess.run([python, "-c", f"import {modules}; print(customer_friendly.agent.operation.__file__)"],
                          cwd=code, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(code)), done.stdout  # the copy, not the venv's install


# --- a release that cannot boot, against a stand-in Puma cluster -------------------------------

FAKE_PUMA = r'''
"""Enough of a Puma cluster master for the agent's watch: workers titled as Puma's, a phased
restart (SIGUSR1) replacing them one at a time once all are booted, a hot one (SIGUSR2) all at
once under the same pid. Each worker reads `current` when it starts (Puma re-resolves its
directory at each phase): it boots when config.ru does not raise, else it exits after 0.3s and
its slot is respawned 0.2s later, Puma's crash loop."""
import os, signal, subprocess, sys, time
code, count = sys.argv[1], int(sys.argv[2])
master, phase, asked, slots, pending = os.getpid(), 0, [], {}, {}

def spawn(index):
    with open(os.path.join(code, "current", "config.ru")) as fh:
        boots = "raise" not in fh.read()
    title = f"puma: cluster worker {index}: {master} [fake]"
    return subprocess.Popen([title, "1000" if boots else "0.3"], executable="sleep"), phase, time.monotonic()

for sig, what in ((signal.SIGUSR1, "phased"), (signal.SIGUSR2, "hot"), (signal.SIGTERM, "stop")):
    signal.signal(sig, lambda *_, what=what: asked.append(what))
slots = {i: spawn(i) for i in range(count)}
while True:
    while asked:
        what = asked.pop(0)
        if what == "stop":
            sys.exit(0)
        phase += 1
        if what == "hot":
            for proc, _, _ in slots.values():
                proc.kill()
                proc.wait()
            pending.clear()
            slots = {i: spawn(i) for i in range(count)}
    now = time.monotonic()
    for i, (proc, _, _) in list(slots.items()):
        if proc.poll() is not None:
            del slots[i]
            pending[i] = now + 0.2
    for i, at in list(pending.items()):
        if now >= at:
            del pending[i]
            slots[i] = spawn(i)
    if not pending and all(now - born >= 0.5 for _, _, born in slots.values()):
        old = [i for i, (_, p, _) in slots.items() if p != phase]
        if old:
            proc = slots.pop(old[0])[0]
            proc.terminate()
            proc.wait()
            slots[old[0]] = spawn(old[0])
    time.sleep(0.02)
'''


@pytest.fixture
def fake_puma(volume: Path) -> Iterator[tuple[Layout, str, Path]]:
    """v1 current (v0 previous), `broken` published, and a stand-in Puma cluster of 2 workers on v1."""
    from customer_friendly.agent import puma

    layout, source = prepared(volume)
    publish(volume / "artifacts", "broken", release_archive("broken", broken=True))
    proc = subprocess.Popen([sys.executable, "-c", FAKE_PUMA, str(layout.root), "2"], start_new_session=True)
    pidfile = volume / "puma.pid"
    pidfile.write_text(str(proc.pid))
    try:
        for _ in range(100):
            view = puma.find_puma(puma.read_processes(), proc.pid)
            if view is not None and len(view.workers) == 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the stand-in Puma did not start its workers")
        time.sleep(0.6)  # booted
        yield layout, source, pidfile
    finally:
        os.killpg(proc.pid, 9)  # the master and its workers
        proc.wait()


def boot_agent(layout: Layout, pidfile: Path) -> Agent:
    """The default deadline (120s): a release that cannot boot must fail long before it."""
    config = AgentConfig.from_env(env={"CFO_CODE_PATH": str(layout.root), "CFO_PUMA_PIDFILE": str(pidfile)})
    assert (config.restart_deadline, config.boot_failures) == (120, 3)
    return Agent(config)


@pytest.mark.parametrize("mode", ["phased", "hot"])
def test_a_release_that_cannot_boot_fails_on_its_crash_loop_and_puma_is_restarted_on_the_old_release(
        fake_puma: tuple[Layout, str, Path], mode: str) -> None:
    layout, source, pidfile = fake_puma
    agent = boot_agent(layout, pidfile)
    before = links(layout)
    assert agent.start(ReleaseRequest("broken", source, RestartOptions(restart=mode))) is True
    agent.wait(600)
    status = agent.status()
    assert status["state"] == "failed", status
    # Both slots of a hot restart crash at once: the count can pass 3 in one view.
    failed = re.match(rf"release broken cannot boot: (\d+) new workers exited during the {mode} restart; ",
                      status["error"])
    assert failed is not None and int(failed.group(1)) >= 3, status["error"]
    assert "restart not done after" not in status["error"]  # the crash loop, not the deadline, ended it
    assert f"current and previous restored, and Puma restarted on the old release ({mode} restart)" in status["error"]
    assert (status["reverted"], status["puma_restored"]) == (True, True)
    assert links(layout) == before and (status["release"], status["previous"]) == ("v1", "v0")
    assert status["puma"]["workers"] == 2 and status["puma"]["bootFailures"] == 0  # the revert's restart
    # The controller's rollback to v1: nothing to do.
    assert agent.start(ReleaseRequest("v1", source, RestartOptions(restart=mode))) is False
    done = agent.status()
    assert done["state"] == "done"
    # One restart onto broken, one back onto v1 (the agent's own revert); the rollback signalled nothing.
    assert done["signalled"] == {"broken": 1, "v1": 1} and done["asked"] == {"broken": 1, "v1": 1}


def test_when_the_old_release_crash_loops_too_the_wait_for_it_stops_and_says_so(
        fake_puma: tuple[Layout, str, Path]) -> None:
    layout, source, pidfile = fake_puma
    # v1's workers booted; from now on a new one cannot (say, a secret it reads at boot is gone).
    (layout.root / "releases" / "v1" / "config.ru").write_text('raise "v1 cannot boot either"\n')
    agent = boot_agent(layout, pidfile)
    before = links(layout)
    assert agent.start(ReleaseRequest("broken", source)) is True
    agent.wait(600)
    status = agent.status()
    assert status["state"] == "failed", status
    assert status["error"].startswith("release broken cannot boot: 3 new workers exited during the phased restart")
    assert ("current and previous restored, but Puma could not be brought back: release v1 cannot boot: 3 new "
            "workers exited during the phased restart") in status["error"], status["error"]
    assert (status["reverted"], status["puma_restored"]) == (True, False)
    assert links(layout) == before
    assert agent.start(ReleaseRequest("v1", source)) is True  # Puma is not back on v1: asking again is real work
    agent.wait(600)


def test_the_boot_failures_setting_comes_from_the_environment() -> None:
    assert AgentConfig.from_env(env={}).boot_failures == 3
    assert AgentConfig.from_env(env={"CFO_BOOT_FAILURES": "5"}).boot_failures == 5
    assert AgentConfig.from_env(env={"CFO_BOOT_FAILURES": "0"}).boot_failures == 0  # only the deadline


# --- a restart whose agent was killed, finished by the agent's next process ---------------------

def journaled_restart(layout: Layout, source: str, pidfile: Path, master_ticks_offset: int = 0) -> journal.Restart:
    """What a killed agent leaves: v2 current, Puma sent USR1, the journal written."""
    from customer_friendly.agent import puma

    install(layout, "v2", source)
    switch(layout, "v2")
    master = int(pidfile.read_text())
    view = puma.find_puma(puma.read_processes(), master)
    assert view is not None
    ticks = puma.boot_ticks_now()
    os.kill(master, signal.SIGUSR1)
    record = journal.Restart("v2", "phased", master, view.master.start_ticks + master_ticks_offset, ticks, 2, False,
                             time.time() + 60)
    journal.write(layout.root, record)
    return record


def test_a_restarted_agent_finishes_the_restart_its_previous_process_signalled(
        fake_puma: tuple[Layout, str, Path]) -> None:
    from customer_friendly.agent import puma

    layout, source, pidfile = fake_puma
    record = journaled_restart(layout, source, pidfile)
    agent = boot_agent(layout, pidfile)  # a new process: nothing in memory
    assert agent.resume() is True
    first = agent.status()
    assert (first["state"], first["target"], first["release"]) == ("restarting", "v2", "v2")
    agent.wait(60)
    status = agent.status()
    assert status["state"] == "done", status
    view = puma.find_puma(puma.read_processes(), record.master_pid)
    assert view is not None and puma.restarted_since(view, record.signal_ticks, 2)
    assert journal.read(layout.root) is None
    # The controller asking again for v2 now finds it done: nothing is signalled twice.
    assert agent.start(ReleaseRequest("v2", source)) is False and agent.status()["signalled"] == {}


def test_a_journal_whose_puma_was_started_again_is_dropped(fake_puma: tuple[Layout, str, Path]) -> None:
    layout, source, pidfile = fake_puma
    journaled_restart(layout, source, pidfile, master_ticks_offset=-1)  # another process had that pid
    agent = boot_agent(layout, pidfile)
    assert agent.resume() is False
    assert agent.status()["state"] == "idle" and journal.read(layout.root) is None


def test_a_torn_journal_reads_as_none() -> None:
    record = journal.Restart("v2", "phased", 10, 20, 30, 2, True, 1.5)
    assert journal.Restart.from_json(record.to_json()) == record
    assert journal.Restart.from_json(record.to_json()[:20]) is None
    assert journal.Restart.from_json('{"release": "v2"}') is None


# --- Puma killed during a restart: the rollback finds the Puma the kubelet started again -------

def start_fake_puma(layout: Layout, pidfile: Path) -> subprocess.Popen[bytes]:
    """A new stand-in master on whatever `current` is, as the kubelet restarting the container."""
    proc = subprocess.Popen([sys.executable, "-c", FAKE_PUMA, str(layout.root), "2"], start_new_session=True)
    pidfile.write_text(str(proc.pid))
    return proc


def test_a_rollback_after_puma_was_killed_mid_restart_waits_for_the_new_puma_and_signals_nothing(
        fake_puma: tuple[Layout, str, Path]) -> None:
    layout, source, pidfile = fake_puma
    agent = boot_agent(layout, pidfile)
    before = links(layout)
    assert agent.start(ReleaseRequest("v2", source, RestartOptions(restart="phased"))) is True
    time.sleep(0.3)
    os.killpg(int(pidfile.read_text()), signal.SIGKILL)  # the master and its workers, mid restart
    agent.wait(30)
    failed = agent.status()
    assert failed["state"] == "failed" and "exited during the phased restart" in failed["error"], failed
    assert (failed["reverted"], failed["puma_restored"]) == (True, False) and links(layout) == before
    # The controller's rollback arrives before the kubelet has started Puma again.
    assert agent.start(ReleaseRequest("v1", source, RestartOptions(restart="phased"))) is True
    time.sleep(1.5)
    assert agent.status()["state"] != "failed"  # waiting for Puma, not "Puma master not found"
    again = start_fake_puma(layout, pidfile)
    try:
        agent.wait(30)
        status = agent.status()
        assert status["state"] == "done", status
        assert f"Puma (pid {again.pid}) started after release v1 was put back" in status["note"]
        assert status["signalled"] == {"v2": 1} and links(layout) == before
    finally:
        os.killpg(again.pid, signal.SIGKILL)
        again.wait()


def test_a_puma_started_before_current_was_put_back_is_restarted_onto_it(
        fake_puma: tuple[Layout, str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The kubelet was quicker than the revert: that Puma may have booted on the failed release."""
    layout, source, pidfile = fake_puma
    agent = boot_agent(layout, pidfile)
    assert agent.start(ReleaseRequest("v2", source, RestartOptions(restart="phased"))) is True
    time.sleep(0.3)
    os.killpg(int(pidfile.read_text()), signal.SIGKILL)
    agent.wait(30)
    monkeypatch.setattr(agent, "_restored_ticks", 10**12)  # as if `current` had been put back after it started
    again = start_fake_puma(layout, pidfile)
    try:
        time.sleep(1.0)  # its workers booted
        assert agent.start(ReleaseRequest("v1", source, RestartOptions(restart="phased"))) is True
        agent.wait(60)
        status = agent.status()
        assert status["state"] == "done", status
        assert status["signalled"] == {"v2": 1, "v1": 1}  # restarted onto v1 once
    finally:
        os.killpg(again.pid, signal.SIGKILL)
        again.wait()
