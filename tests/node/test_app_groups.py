"""An app group on the real node: web (Puma under POST load through its ClusterIP, with the
migration), a worker and a cron Deployment (the Ruby worker of worker_app.py, drained), all
`customer-friendly.dev/app: shop`. `kubectl cfo release --app shop v2 --wait` runs the migration
once, then web, then the worker, then cron, with 0 failed requests; a release whose worker step
fails rolls web back, again with 0 failed requests, and cron is never touched."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from customer_friendly import contract as c
from testbed.load import Load
from testbed.node_app import WebApp, release_tarball, web_files
from testbed.worker_app import worker_files

pytestmark = pytest.mark.node

MIGRATE = """$stdout.sync = true
require "socket"
File.open("/gate/ran-{release}", "a") {{ |f| f.puts Socket.gethostname }}
puts "migrate: release {release} in #{{File.realpath(Dir.pwd)}}"
"""


@dataclass
class Shop:
    web: WebApp
    worker: WebApp
    cron: WebApp
    gate: Path
    jobs: Path

    @property
    def members(self) -> list[WebApp]:
        return [self.web, self.worker, self.cron]


def shop(app: WebApp, tmp_path: Path, worker_releases: tuple[str, ...]) -> Shop:
    """web v1 (2 Puma pods, `migrate` set), worker v1 and cron v1 (1 pod each), in one app group."""
    sources, ns = app.product.sources, app.namespace
    for release in ("v1", "v2", "v3"):
        sources.publish_at(f"{ns}/web", release, release_tarball(
            {**web_files(release), "db/migrate.rb": MIGRATE.format(release=release)}))
        sources.publish_at(f"{ns}/cron", release, release_tarball(dict(worker_files(release))))
    for release in worker_releases:
        sources.publish_at(f"{ns}/worker", release, release_tarball(dict(worker_files(release))))
    group = {c.APP: "shop"}
    gate, jobs = tmp_path / "gate", tmp_path / "jobs"
    gate.mkdir()

    app.replicas = 2
    web = app.manifest("v1", sources.s3_at(f"{ns}/web"), annotations={**group, c.MIGRATE: "ruby db/migrate.rb"})
    spec = web["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "gate", "hostPath": {"path": str(gate), "type": "Directory"}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "gate", "mountPath": "/gate"}]
    app.create(web)

    worker = WebApp(app.node, app.product, ns, name="worker", replicas=1)
    worker.apply(worker.worker_manifest("v1", sources.s3_at(f"{ns}/worker"), jobs, annotations=group))
    cron = WebApp(app.node, app.product, ns, name="cron", replicas=1)
    cron.apply(cron.worker_manifest("v1", sources.s3_at(f"{ns}/cron"), tmp_path / "cron-jobs", title="cron-app",
                                    annotations={**group, c.ROLE: "cron"}))
    app.wait_ready(serving="v1")
    for member in (app, worker, cron):
        member.wait_ready()
        member.wait_rollout("v1", ("Complete",))
    return Shop(app, worker, cron, gate, jobs)


def epoch(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def agent_times(app: WebApp) -> list[dict[str, Any]]:
    return [app.agent_status(pod) for pod in app.pods()]


def produce(queue: Path, count: int) -> threading.Thread:
    def run() -> None:
        for i in range(count):
            (queue / f"{i:05d}.tmp").write_text("job")
            os.rename(queue / f"{i:05d}.tmp", queue / f"{i:05d}.job")
            time.sleep(0.1)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_group_release_migrates_once_then_moves_web_then_the_worker_then_cron_with_no_failed_request(
        app: WebApp, tmp_path: Path) -> None:
    group = shop(app, tmp_path, ("v1", "v2"))
    web, worker, cron = group.members
    uids = {m.name: m.uids() for m in group.members}
    producer = produce(group.jobs / "queue", 40)
    load = Load(web.cluster_ip(), 80, rate=100).start()
    time.sleep(1)
    result = web.cfo("release", "--app", "shop", "v2", "--wait", "--timeout", "400")
    time.sleep(1)
    load.stop()
    producer.join()
    print(f"\n[app group v2 on the real node] sent={len(load.samples)} failed={len(load.failures())}")
    assert result.returncode == 0, result.stdout + result.stderr + web.controller_log()
    assert "Complete: app shop serves v2" in result.stderr
    assert load.failures() == [], load.failures()[:3]
    assert {s.body.split()[0] for s in load.samples[-50:]} == {"v2"}

    # The migration ran once, in one Job, before any web pod was asked.
    assert web.jobs() == ["web-migrate-v2"]
    assert len((group.gate / "ran-v2").read_text().splitlines()) == 1
    job = web.job("web-migrate-v2")
    assert job is not None and job["status"].get("succeeded") == 1
    migrated = epoch(job["status"]["completionTime"])  # whole seconds, never later than the truth
    web_agents, worker_agents, cron_agents = (agent_times(m) for m in group.members)
    assert migrated <= min(s["started_at"] for s in web_agents)
    assert max(s["finished_at"] for s in web_agents) <= min(s["started_at"] for s in worker_agents)
    assert max(s["finished_at"] for s in worker_agents) <= min(s["started_at"] for s in cron_agents)
    for member, agents in zip(group.members, (web_agents, worker_agents, cron_agents), strict=True):
        assert [(s["release"], s["asked"].get("v2")) for s in agents] == [("v2", 1)] * member.replicas
        assert member.uids() == uids[member.name]
    assert set(web.restarts().values()) == {0}
    assert sorted(worker.restarts().values()) == sorted(cron.restarts().values()) == [0, 0, 1]  # drained

    # Every job queued during the release was done exactly once, by v1 or by v2.
    app.node.wait("all 40 jobs done", lambda: len(list((group.jobs / "done").glob("*.done"))) == 40, 120)
    lines = [p.read_text().splitlines() for p in (group.jobs / "done").glob("*.done")]
    assert all(len(done) == 1 for done in lines)
    assert {done[0].split()[0] for done in lines} <= {"v1", "v2"}
    status = json.loads(web.cfo("status", "--app", "shop", "-o", "json").stdout)
    assert [(r["deployment"], r["role"], r["phase"]) for r in status] == [
        ("web", "web", "Complete"), ("worker", "worker", "Complete"), ("cron", "cron", "Complete")]


def test_a_failing_worker_step_rolls_web_back_with_no_failed_request_and_cron_is_never_touched(
        app: WebApp, tmp_path: Path) -> None:
    group = shop(app, tmp_path, ("v1",))  # the worker has no v3: its step fails
    web, worker, cron = group.members
    uids = {m.name: m.uids() for m in group.members}
    load = Load(web.cluster_ip(), 80, rate=100).start()
    time.sleep(1)
    result = web.cfo("release", "--app", "shop", "v3", "--wait", "--timeout", "400")
    time.sleep(1)
    load.stop()
    print(f"\n[app group v3, worker fails, real node] sent={len(load.samples)} failed={len(load.failures())}")
    assert result.returncode == 1, result.stdout + result.stderr + web.controller_log()
    assert load.failures() == [], load.failures()[:3]
    assert {s.body.split()[0] for s in load.samples} >= {"v3"}  # web did move before the worker failed
    assert {s.body.split()[0] for s in load.samples[-50:]} == {"v1"}

    rollout = web.rollout()
    assert rollout["phase"] == "RolledBack" and "app group: worker failed" in rollout["message"], rollout
    assert worker.rollout()["phase"] in ("Failed", "RolledBack") and "not found" in worker.rollout()["message"]
    assert cron.rollout()["phase"] == "Failed" and "not started" in cron.rollout()["message"], cron.rollout()
    for pod in web.pods():
        assert web.links(pod) == ("releases/v1", "releases/v3")
        assert web.agent_status(pod)["release"] == "v1"
    for member in (worker, cron):
        [pod] = member.pods()
        assert member.links(pod) == ("releases/v1", None)
        assert member.agent_status(pod)["release"] == "v1"
    assert cron.agent_status(cron.pods()[0])["asked"] == {}
    for member in group.members:
        assert set(member.restarts().values()) == {0}
        assert member.uids() == uids[member.name]
