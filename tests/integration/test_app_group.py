"""An app group: web (real Puma under POST load) and a worker (a real Ruby worker under the
agent), released together with `kubectl cfo release --app`: web first, then the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import contract as c
from tests.harness.load import Load
from tests.harness.puma_app import AgentClient, publish
from tests.harness.worker_app import worker_archive
from tests.integration.conftest import REPLICAS, Fleet

pytestmark = pytest.mark.integration

WORKERS = 2


def cfo(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    env = fleet.kube.cluster.env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run([str(fleet.kube.cluster.kubectl_path), "cfo", "-n", fleet.kube.namespace, *args],
                          capture_output=True, text=True, env=env, timeout=240, check=False)


def add_worker(fleet: Fleet, tmp_path: Path) -> Path:
    artifacts = tmp_path / "worker-artifacts"
    for release in ("v1", "v2"):  # no v3: a release whose worker step fails
        publish(artifacts, release, worker_archive(release))
    fleet.annotate(app="shop")
    fleet.kube.apply({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "worker", "annotations": {
            c.ENABLED: "true", c.RELEASE: "v1", c.SOURCE: f"file://{artifacts}/{{release}}.tar.gz",
            c.APP: "shop", c.RESTART: "drain", c.PROCESS: "^worker-app", c.DRAIN_SECONDS: "1",
            c.MAX_UNAVAILABLE: "100%", c.CANARY: "1"}},
        "spec": {"replicas": WORKERS, "selector": {"matchLabels": {"app": "worker"}}, "template": {
            "metadata": {"labels": {"app": "worker", "component": "worker"}},
            "spec": {"containers": [{"name": "sidekiq", "image": "acme/web-runtime:ruby-3.3"}]}}},
    })
    fleet.kubelet.sync("app=worker", WORKERS)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pods = fleet.kube.get("pods", app="worker")["items"]
        if [(p["metadata"].get("annotations") or {}).get(c.RELEASE) for p in pods] == ["v1"] * WORKERS:
            return artifacts
        time.sleep(0.3)
    raise AssertionError("worker pods never verified on v1")


def agent_times(fleet: Fleet, names: list[str]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        pod = fleet.kubelet.started[name]
        client = AgentClient(pod.agent.url, fleet.certs / "controller.crt", fleet.certs / "controller.key")
        out.append(client.call("GET", "/v1/status")[1])
    return out


def test_a_group_release_moves_web_then_the_worker_with_no_failed_request(fleet: Fleet, tmp_path: Path) -> None:
    add_worker(fleet, tmp_path)
    web_pods = [n for n, p in fleet.kubelet.started.items() if p.puma is not None]
    worker_pods = [n for n, p in fleet.kubelet.started.items() if p.supervisor is not None]
    load = Load("127.0.0.1", fleet.nginx.port, rate=200).start()
    time.sleep(1)
    result = cfo(fleet, "release", "--app", "shop", "v2", "--wait")
    time.sleep(1)
    load.stop()
    print(f"\n[app group v2] sent={len(load.samples)} failed={len(load.failures())}")
    assert result.returncode == 0, result.stderr
    assert "Complete: app shop serves v2" in result.stderr
    assert load.failures() == []
    assert all(fleet.served(n) == "v2" for n in web_pods + worker_pods)
    web_done = max(s["finished_at"] for s in agent_times(fleet, web_pods))
    worker_started = min(s["started_at"] for s in agent_times(fleet, worker_pods))
    assert worker_started >= web_done  # the worker waited for web
    status = json.loads(cfo(fleet, "status", "--app", "shop", "-o", "json").stdout)
    assert [(r["deployment"], r["role"], r["phase"]) for r in status] == [
        ("web", "web", "Complete"), ("worker", "worker", "Complete")]


def test_a_failing_worker_step_rolls_the_web_pods_back(fleet: Fleet, tmp_path: Path) -> None:
    add_worker(fleet, tmp_path)
    assert cfo(fleet, "release", "--app", "shop", "v2", "--wait").returncode == 0
    web_pods = [n for n, p in fleet.kubelet.started.items() if p.puma is not None]
    load = Load("127.0.0.1", fleet.nginx.port, rate=200).start()
    time.sleep(1)
    result = cfo(fleet, "release", "--app", "shop", "v3", "--wait")  # the worker has no v3
    time.sleep(1)
    load.stop()
    print(f"\n[app group v3, worker fails] sent={len(load.samples)} failed={len(load.failures())}")
    assert result.returncode == 1, result.stderr
    assert load.failures() == []
    web = fleet.rollout()
    assert web["phase"] == "RolledBack" and "app group: worker failed" in web["message"]
    assert all(fleet.served(n) == "v2" for n in web_pods)
    assert set(fleet.pod_releases().values()) == {"v2"}
    assert len(web_pods) == REPLICAS
