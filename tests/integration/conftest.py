"""Session fixtures: a real control plane and the real webhook, shared by integration tests.

Nothing here skips. If the binaries are missing they are built (testbed/k8s/build.sh); if
that fails, the session fails with the build's error.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.controlplane import ControlPlane
from testbed.webhook import WebhookServer, register

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
