"""Workers on the real node: a Deployment whose container runs a real Ruby worker (it honours
TSTP and TERM as Sidekiq does, testbed/worker_app.py) as its main process, released with
`restart: drain`. The agent quiets it, waits until its title says it is idle, sends TERM, and
the kubelet restarts the container in place: restartCount goes up by one, the pod's UID, IP and
volume stay, every job is done exactly once, and the worker comes back on the new code.

The jobs queue is a host directory mounted into the worker container by the test's own
Deployment spec (test setup, standing in for Redis); the worker claims each job by an atomic
rename."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from customer_friendly import contract as c
from testbed.node_app import WebApp, release_tarball
from testbed.worker_app import worker_files

pytestmark = pytest.mark.node


def start_worker(app: WebApp, jobs: Path, **annotations: str) -> dict[str, Any]:
    app.name, app.replicas = "worker", 1
    sources = app.product.sources
    for release in ("v1", "v2"):
        sources.publish_at(app.namespace, release, release_tarball(dict(worker_files(release))))
    app.create(app.worker_manifest("v1", sources.s3_at(app.namespace), jobs, annotations=annotations))
    [pod] = app.wait_ready()
    app.wait_rollout("v1", ("Complete",))
    return pod


def produce(queue: Path, count: int, interval: float) -> threading.Thread:
    def run() -> None:
        for i in range(count):
            (queue / f"{i:05d}.tmp").write_text("job")
            os.rename(queue / f"{i:05d}.tmp", queue / f"{i:05d}.job")
            time.sleep(interval)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def claim_uid(app: WebApp, pod: dict[str, Any]) -> str:
    claim = json.loads(app.kubectl("get", "pvc", f"{pod['metadata']['name']}-{c.CODE_VOLUME}", "-o", "json").stdout)
    return claim["metadata"]["uid"]


def test_a_drained_worker_is_restarted_in_place_by_the_kubelet_and_does_every_job_once(
        app: WebApp, tmp_path: Path) -> None:
    jobs, count = tmp_path / "jobs", 60
    before = start_worker(app, jobs, **{c.DRAIN_SECONDS: "120"})  # its title says when it is idle
    name, uid, ip, claim = (before["metadata"]["name"], before["metadata"]["uid"], before["status"]["podIP"],
                            claim_uid(app, before))
    assert app.restarts() == {f"{name}/{c.FETCH_CONTAINER}": 0, f"{name}/{c.AGENT_CONTAINER}": 0,
                              f"{name}/worker": 0}

    producer = produce(jobs / "queue", count, 0.1)
    app.node.wait("the worker to be busy on v1", lambda: len(list((jobs / "done").glob("*.done"))) >= 5, 60)
    result = app.cfo("release", "worker", "v2", "--wait", "--timeout", "240")
    assert result.returncode == 0, result.stdout + result.stderr + app.controller_log()
    producer.join()
    app.node.wait(f"all {count} jobs done", lambda: len(list((jobs / "done").glob("*.done"))) == count, 120)

    records = {p.stem: p.read_text().splitlines() for p in (jobs / "done").glob("*.done")}
    assert all(len(lines) == 1 for lines in records.values()), {k: v for k, v in records.items() if len(v) != 1}
    done = {job: lines[0].split() for job, lines in records.items()}  # job -> [release, pid, pod]
    assert {d[2] for d in done.values()} == {name}
    by_release = {release: {d[1] for d in done.values() if d[0] == release} for release in ("v1", "v2")}
    assert set(d[0] for d in done.values()) == {"v1", "v2"}  # it came back on the new code
    assert len(by_release["v1"]) == len(by_release["v2"]) == 1  # one process each: one restart
    last_v1 = max(job for job, d in done.items() if d[0] == "v1")
    assert all(d[0] == "v2" for job, d in done.items() if job > last_v1)
    assert sorted(os.listdir(jobs / "queue")) == []  # nothing left queued or claimed

    [after] = app.pods()
    assert (after["metadata"]["uid"], after["status"]["podIP"], claim_uid(app, after)) == (uid, ip, claim)
    assert app.restarts() == {f"{name}/{c.FETCH_CONTAINER}": 0, f"{name}/{c.AGENT_CONTAINER}": 0,
                              f"{name}/worker": 1}
    assert app.links(after) == ("releases/v2", "releases/v1")
    status = app.agent_status(after)
    assert (status["release"], status["asked"]) == ("v2", {"v2": 1}), status
    assert any("is idle (its title says 0 busy)" in step for step in status["steps"]), status["steps"]
    assert "restarted as pid" in status["note"], status
    previous = app.kubectl("logs", name, "-c", "worker", "--previous").stdout
    assert "worker-app v1: quiet, taking no new jobs" in previous
    assert "worker-app v1: TERM, exiting with nothing in hand" in previous
    assert "worker-app v2 started" in app.logs(name, "worker")
    rollout = app.rollout()
    assert (rollout["phase"], rollout["release"], rollout["previous"]) == ("Complete", "v2", "v1")
    print(f"\ndrain on the real node: {count} jobs, {len(done)} done once each; "
          f"v1 did {sum(d[0] == 'v1' for d in done.values())}, v2 did {sum(d[0] == 'v2' for d in done.values())}")


def test_no_matching_process_is_reported_and_nothing_moves(app: WebApp, tmp_path: Path) -> None:
    start_worker(app, tmp_path / "jobs", **{c.PROCESS: "^sidekiq"})
    app.kubectl("annotate", "deployment", "worker", f"{c.RELEASE}=v2", "--overwrite")
    rollout = app.wait_rollout("v2", ("Failed", "RolledBack"))
    assert "no process found for a process titled /^sidekiq/" in rollout["message"], rollout
    [pod] = app.pods()
    assert app.links(pod) == ("releases/v1", None)
    assert app.agent_status(pod)["release"] == "v1"
    assert set(app.restarts().values()) == {0}


def test_a_signal_restart_sends_the_named_signal_and_restarts_nothing(app: WebApp, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    pod = start_worker(app, jobs, **{c.RESTART: "signal:HUP"})
    result = app.cfo("release", "worker", "v2", "--wait", "--timeout", "180")
    assert result.returncode == 0, result.stdout + result.stderr + app.controller_log()
    status = app.agent_status(pod)
    assert status["release"] == "v2" and "sent SIGHUP" in status["note"], status
    [hup] = list((jobs / "done").glob("hup-*"))
    assert hup.name.startswith(f"hup-{pod['metadata']['name']}-") and hup.read_text() == "v1"
    assert set(app.restarts().values()) == {0}
    assert app.uids() == {pod["metadata"]["name"]: pod["metadata"]["uid"]}
