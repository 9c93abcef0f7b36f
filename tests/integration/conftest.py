"""Session fixtures: a real control plane and the real webhook, shared by integration tests.

Nothing here skips. If the binaries are missing they are built (tests/k8s/build.sh); if
that fails, the session fails with the build's error.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import contract as c
from tests.harness.controlplane import ControlPlane
from tests.harness.fleet import ControllerProcess, Kubelet, Nginx
from tests.harness.puma_app import AgentClient, publish, release_archive
from tests.harness.webhook import WebhookServer, ensure_certs, register

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("cluster")).start()
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ConfigMap-style policy directory (one file per key), as the webhook mounts it."""
    path = tmp_path_factory.mktemp("policy")
    (path / "preStopSeconds").write_text("15")
    return path


@pytest.fixture(scope="session")
def webhook(cluster: ControlPlane, policy_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookServer]:
    server = WebhookServer(tmp_path_factory.mktemp("webhook"), policy_path=policy_dir).start()
    register(cluster, server)
    yield server
    server.stop()


class Kube:
    """kubectl against the test cluster, in one fresh namespace per test."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace

    def run(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check)

    def apply(self, manifest: dict[str, Any], *extra: str, check: bool = True) -> Any:
        return self.run("apply", "-f", "-", *extra, input=yaml.safe_dump(manifest), check=check)

    def get(self, kind: str, name: str | None = None, **selectors: str) -> dict[str, Any]:
        args = ["get", kind] + ([name] if name else [])
        if selectors:
            args += ["-l", ",".join(f"{k}={v}" for k, v in selectors.items())]
        return json.loads(self.run(*args, "-o", "json").stdout)


@pytest.fixture
def kube(cluster: ControlPlane, webhook: WebhookServer) -> Iterator[Kube]:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    yield Kube(cluster, namespace)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")


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
        return (self.kubelet.started[name].agent.code / "current").readlink().name

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
