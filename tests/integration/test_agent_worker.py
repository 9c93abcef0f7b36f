"""Drain and signal restarts of a real Ruby worker under the real agent."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.controlplane import ROOT
from tests.harness.puma_app import AgentClient, AgentProcess, publish
from tests.harness.webhook import ensure_certs
from tests.harness.worker_app import Supervisor, worker_archive

pytestmark = pytest.mark.integration


@dataclass
class WorkerPod:
    code: Path
    source: str
    supervisor: Supervisor
    client: AgentClient


@pytest.fixture
def worker_pod(tmp_path: Path) -> Iterator[WorkerPod]:
    certs = tmp_path / "certs"
    ensure_certs(certs)
    for release in ("v1", "v2"):
        publish(tmp_path / "artifacts", release, worker_archive(release))
    source = f"file://{tmp_path / 'artifacts'}/{{release}}.tar.gz"
    code = tmp_path / "code"
    subprocess.run([sys.executable, "-m", "agent", "fetch"], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "CFO_CODE_PATH": str(code), "CFO_RELEASE_DEFAULT": "v1",
                        "CFO_SOURCE_DEFAULT": source})
    supervisor = Supervisor(code, tmp_path / "queue", tmp_path / "done", tmp_path / "worker.log").start()
    agent = AgentProcess(code, tmp_path, certs / "ca.crt", {"CFO_RESTART_DEADLINE_SECONDS": "20"}).start()
    yield WorkerPod(code, source, supervisor, AgentClient(agent.url, certs / "controller.crt",
                                                          certs / "controller.key"))
    agent.stop()
    supervisor.stop()


def produce(queue: Path, count: int, interval: float) -> threading.Thread:
    def run() -> None:
        for i in range(count):
            (queue / f"{i:05d}.tmp").write_text("job")
            os.rename(queue / f"{i:05d}.tmp", queue / f"{i:05d}.job")
            time.sleep(interval)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_drained_worker_finishes_its_jobs_and_comes_back_on_the_new_code(worker_pod: WorkerPod) -> None:
    jobs = 60
    producer = produce(worker_pod.supervisor.queue, jobs, 0.1)
    time.sleep(1.5)
    code, _ = worker_pod.client.call("POST", "/v1/release", {
        "release": "v2", "source": worker_pod.source, "restart": "drain", "process": "^worker-app",
        "drainSeconds": 600})  # the worker says when it is idle: no need to wait that long
    assert code == 202
    status = worker_pod.client.wait(timeout=60)
    assert status["state"] == "done", status
    assert status["release"] == "v2" and "restarted as pid" in status["note"]
    assert any("is idle (its title says 0 busy)" in step for step in status["steps"]), status["steps"]
    producer.join()
    deadline = time.monotonic() + 60
    done_dir = worker_pod.supervisor.done
    while time.monotonic() < deadline and len(list(done_dir.glob("*.done"))) < jobs:
        time.sleep(0.2)
    finished = {p.name: p.read_text().split()[0] for p in done_dir.glob("*.done")}
    assert len(finished) == jobs  # nothing lost
    assert list(worker_pod.supervisor.queue.iterdir()) == []  # nothing left claimed or queued
    assert set(finished.values()) == {"v1", "v2"}  # the worker came back on the new code
    assert len(worker_pod.supervisor.pids) == 2  # one restart, in place


def test_no_matching_process_is_reported_honestly_and_nothing_moves(worker_pod: WorkerPod) -> None:
    worker_pod.client.call("POST", "/v1/release", {"release": "v2", "source": worker_pod.source,
                                                   "restart": "drain", "process": "^sidekiq"})
    status = worker_pod.client.wait()
    assert status["state"] == "failed" and "no process found for a process titled /^sidekiq/" in status["error"]
    assert os.readlink(worker_pod.code / "current") == "releases/v1"


def test_a_signal_restart_sends_the_named_signal(worker_pod: WorkerPod) -> None:
    time.sleep(1)
    worker_pod.client.call("POST", "/v1/release", {"release": "v2", "source": worker_pod.source,
                                                   "restart": "signal:HUP", "process": "^worker-app"})
    status = worker_pod.client.wait()
    assert status["state"] == "done" and "sent SIGHUP" in status["note"]
    assert list(worker_pod.supervisor.done.glob("hup-*"))
