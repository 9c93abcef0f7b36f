"""End to end: the webhook and the controller as separate processes, a real control plane,
real agents in front of real Pumas, nginx in front of those, and a constant POST load.

`kubectl annotate deploy web customer-friendly.dev/release=v2` is the whole user action.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import contract as c
from tests.harness.controlplane import ControlPlane
from tests.harness.fleet import ControllerProcess, Kubelet, Nginx
from tests.harness.load import Load
from tests.harness.puma_app import AgentClient, publish, release_archive
from tests.harness.webhook import WebhookServer, ensure_certs
from tests.integration.conftest import Kube

pytestmark = pytest.mark.integration

RATE = 200.0
REPLICAS = 3


@dataclass
class Fleet:
    kube: Kube
    kubelet: Kubelet
    controller: ControllerProcess
    nginx: Nginx
    artifacts: Path
    certs: Path

    def deployment(self) -> dict[str, Any]:
        return self.kube.get("deployment", "web")

    def rollout(self) -> dict[str, Any]:
        return json.loads(self.deployment()["metadata"]["annotations"].get(c.ROLLOUT, "{}"))

    def wait_rollout(self, release: str, phases: tuple[str, ...], timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        rollout: dict[str, Any] = {}
        while time.monotonic() < deadline:
            rollout = self.rollout()
            if rollout.get("release") == release and rollout.get("phase") in phases and not rollout.get("batch"):
                return rollout
            time.sleep(0.3)
        raise AssertionError(f"rollout never reached {phases} for {release}: {rollout}\n"
                             f"{self.controller.log.read_text()[-3000:]}")

    def pod_releases(self) -> dict[str, str | None]:
        return {p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(c.RELEASE)
                for p in self.kube.get("pods", app="web")["items"]}

    def agent(self, name: str) -> dict[str, Any]:
        pod = self.kubelet.started[name]
        client = AgentClient(pod.agent.url, self.certs / "controller.crt", self.certs / "controller.key")
        return client.call("GET", "/v1/status")[1]

    def served(self, name: str) -> str:
        return (self.kubelet.started[name].puma.code / "current").readlink().name

    def events(self) -> list[str]:
        items = json.loads(self.kube.run("get", "events", "--field-selector", "involvedObject.name=web", "-o",
                                         "json").stdout)["items"]
        return [e["reason"] for e in sorted(items, key=lambda e: e.get("firstTimestamp") or "")]

    def annotate(self, **annotations: str) -> None:
        pairs = [f"{c.PREFIX}{k.replace('_', '-')}={v}" for k, v in annotations.items()]
        self.kube.run("annotate", "deployment/web", *pairs, "--overwrite")


def manifest(artifacts: Path, release: str = "v1", replicas: int = REPLICAS, **extra: str) -> dict[str, Any]:
    annotations = {c.ENABLED: "true", c.RELEASE: release, c.SOURCE: f"file://{artifacts}/{{release}}.tar.gz",
                   c.CANARY: "1", c.MAX_UNAVAILABLE: "1"}
    annotations |= {c.PREFIX + k.replace("_", "-"): v for k, v in extra.items()}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "annotations": annotations},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "puma", "image": "acme/web-runtime:ruby-3.3",
                                     "readinessProbe": {"httpGet": {"path": "/up", "port": 3000}}}]}}},
    }


@pytest.fixture
def fleet(kube: Kube, cluster: ControlPlane, webhook: WebhookServer, tmp_path: Path) -> Iterator[Fleet]:
    certs = tmp_path / "certs"
    ensure_certs(certs)
    artifacts = tmp_path / "artifacts"
    for release in ("v1", "v2", "v3", "v4"):
        publish(artifacts, release, release_archive(release))
    publish(artifacts, "broken", release_archive("broken", broken=True))
    controller = ControllerProcess(cluster, tmp_path / "controller", certs).start()
    kube.apply(manifest(artifacts))
    kubelet = Kubelet(cluster, kube.namespace, tmp_path / "pods", certs / "ca.crt")
    pods = kubelet.sync("app=web", REPLICAS)
    nginx = Nginx(tmp_path / "nginx").start([p.puma.port for p in pods])
    fleet = Fleet(kube, kubelet, controller, nginx, artifacts, certs)
    fleet.wait_rollout("v1", ("Complete",))
    deadline = time.monotonic() + 30  # the controller verifies the new pods by asking their agents
    while time.monotonic() < deadline and set(fleet.pod_releases().values()) != {"v1"}:
        time.sleep(0.2)
    try:
        yield fleet
    finally:
        controller.stop()
        nginx.stop()
        kubelet.stop()


def under_load(fleet: Fleet) -> Load:
    return Load("127.0.0.1", fleet.nginx.port, rate=RATE).start()


def test_annotating_the_release_moves_every_pod_in_place_with_no_failed_request(fleet: Fleet) -> None:
    pods_before = set(fleet.pod_releases())
    assert set(fleet.pod_releases().values()) == {"v1"}
    load = under_load(fleet)
    time.sleep(1)
    started = time.monotonic()
    fleet.annotate(release="v2")
    rollout = fleet.wait_rollout("v2", ("Complete",))
    elapsed = time.monotonic() - started
    time.sleep(1)
    load.stop()
    print(f"\n[controller v1->v2, {REPLICAS} pods] sent={len(load.samples)} failed={len(load.failures())} "
          f"p99={Load.p99(load.samples) * 1000:.1f}ms rollout={elapsed:.1f}s")
    assert load.failures() == []
    assert fleet.pod_releases() == dict.fromkeys(pods_before, "v2")  # same pods: none replaced
    assert all(fleet.served(name) == "v2" for name in pods_before)
    assert rollout["previous"] == "v1" and rollout["updated"] == REPLICAS and rollout["total"] == REPLICAS
    assert {s.body for s in load.samples if s.sent_at > started + elapsed + 0.5} == {"v2"}
    events = fleet.events()
    assert "RolloutStarted" in events and "BatchStarted" in events and "RolloutComplete" in events
    configmap = fleet.kube.get("configmap", "web-cfo-release")
    assert configmap["data"] == {"release": "v2", "source": f"file://{fleet.artifacts}/{{release}}.tar.gz"}
    assert configmap["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    restarts = []
    for name in pods_before:
        status = fleet.agent(name)
        assert status["asked"] == {"v2": 1}
        restarts.append(status["finished_at"] - status["started_at"])
    one_pod = sorted(restarts)[len(restarts) // 2]
    print(f"[controller v1->v2] {REPLICAS} pods in {elapsed:.2f}s; one pod's phased restart (median) "
          f"{one_pod:.2f}s; ratio {elapsed / one_pod:.1f}")
    with urllib.request.urlopen(fleet.controller.metrics_url, timeout=5) as response:
        metrics = response.read().decode()
    assert 'cfo_controller_rollouts_total{outcome="Complete"}' in metrics
    assert "cfo_controller_pods_updated_total" in metrics


def test_a_release_that_cannot_boot_stops_at_the_canary_and_rolls_back(fleet: Fleet) -> None:
    load = under_load(fleet)
    time.sleep(1)
    fleet.annotate(release="broken")
    rollout = fleet.wait_rollout("broken", ("RolledBack",), timeout=120)
    time.sleep(1)
    load.stop()
    print(f"\n[controller broken release, rolled back] sent={len(load.samples)} failed={len(load.failures())} "
          f"p99={Load.p99(load.samples) * 1000:.1f}ms")
    assert load.failures() == []
    assert "restart not done" in rollout["reason"] and rollout["failedPod"]
    assert set(fleet.pod_releases().values()) == {"v1"}
    assert all(fleet.served(name) == "v1" for name in fleet.kubelet.started)
    asked_broken = [name for name in fleet.kubelet.started if fleet.agent(name)["asked"].get("broken")]
    assert asked_broken == [rollout["failedPod"]]  # only the canary ever saw it
    assert "RolloutFailed" in fleet.events() and "RolledBack" in fleet.events()
    assert fleet.kube.get("configmap", "web-cfo-release")["data"]["release"] == "v1"


def test_a_controller_killed_mid_rollout_finishes_it_after_a_restart_asking_each_agent_once(fleet: Fleet) -> None:
    load = under_load(fleet)
    time.sleep(0.5)
    fleet.annotate(release="v2")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not fleet.rollout().get("batch"):
        time.sleep(0.05)
    fleet.controller.kill()  # mid-batch: the batch is recorded, agents may be restarting
    time.sleep(2)
    fleet.controller.start()
    fleet.wait_rollout("v2", ("Complete",))
    time.sleep(1)
    load.stop()
    assert load.failures() == []
    assert set(fleet.pod_releases().values()) == {"v2"}
    for name in fleet.kubelet.started:
        assert fleet.agent(name)["asked"].get("v2") == 1


def test_two_releases_in_quick_succession_end_on_the_second(fleet: Fleet) -> None:
    fleet.annotate(release="v2")
    time.sleep(0.3)
    fleet.annotate(release="v3")
    fleet.wait_rollout("v3", ("Complete",))
    assert set(fleet.pod_releases().values()) == {"v3"}
    assert all(fleet.served(name) == "v3" for name in fleet.kubelet.started)


def test_paused_stops_between_batches_and_resuming_finishes(fleet: Fleet) -> None:
    fleet.annotate(paused="true", release="v2")
    held = fleet.wait_rollout("v2", ("Paused",))
    assert held["updated"] == 0  # paused before the first batch: nothing moves
    fleet.annotate(paused="false")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not fleet.rollout().get("batch"):
        time.sleep(0.05)
    fleet.annotate(paused="true")  # while the canary batch is in flight
    paused = fleet.wait_rollout("v2", ("Paused",))
    assert 1 <= paused["updated"] < REPLICAS  # the batch in flight finished, then it stopped
    time.sleep(2)
    assert list(fleet.pod_releases().values()).count("v2") == paused["updated"]
    fleet.annotate(paused="false")
    fleet.wait_rollout("v2", ("Complete",))
    assert set(fleet.pod_releases().values()) == {"v2"}


def test_pods_added_by_scaling_up_mid_rollout_get_the_new_release(fleet: Fleet) -> None:
    original = set(fleet.kubelet.started)
    fleet.annotate(paused="true", release="v2")
    fleet.wait_rollout("v2", ("Paused",))
    fleet.kube.run("scale", "deployment/web", "--replicas=5")
    fleet.kubelet.sync("app=web", 5)
    added = set(fleet.kubelet.started) - original
    assert len(added) == 2
    assert all(fleet.served(name) == "v2" for name in added)  # they started from the ConfigMap
    assert all(fleet.served(name) == "v1" for name in original)
    fleet.annotate(paused="false")
    rollout = fleet.wait_rollout("v2", ("Complete",))
    assert rollout["total"] == 5
    assert fleet.pod_releases() == dict.fromkeys(fleet.kubelet.started, "v2")
    for name in added:  # verified, never asked: they were born on v2
        assert fleet.agent(name)["asked"] == {}
