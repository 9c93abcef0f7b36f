"""The controller's plumbing against a real API server: the Lease and the watch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from customer_friendly.controller.loop import Lease, watch_deployments
from testbed.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def api_client(plane: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(plane.kubeconfig))


def test_only_one_replica_holds_the_lease_and_a_release_hands_it_over(cluster: ControlPlane) -> None:
    api = client.CoordinationV1Api(api_client(cluster))
    name = f"lease-{time.time_ns()}"
    first, second = (Lease(api, "default", name, identity) for identity in ("replica-a", "replica-b"))
    assert first.try_acquire() is True
    assert second.try_acquire() is False
    assert first.try_acquire() is True  # renewal
    first.release()
    assert second.try_acquire() is True
    assert first.try_acquire() is False


def test_an_expired_lease_is_taken_over(cluster: ControlPlane) -> None:
    api = client.CoordinationV1Api(api_client(cluster))
    name = f"lease-{time.time_ns()}"
    crashed = Lease(api, "default", name, "crashed", duration=1)
    assert crashed.try_acquire()
    time.sleep(2.2)  # lease times have whole-second precision on the wire
    assert Lease(api, "default", name, "survivor", duration=1).try_acquire()


def deployment(name: str, opted_in: bool = True) -> str:
    annotations = {"customer-friendly.dev/enabled": "true"} if opted_in else {}
    return yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": name, "namespace": "default", "annotations": annotations}, "spec": {
        "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {
            "containers": [{"name": "c", "image": "busybox"}]}}}})


@pytest.fixture
def own_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of its own (no webhook, no controller-manager): this test restarts it."""
    plane = ControlPlane(tmp_path / "plane", with_controller_manager=False).start()
    yield plane
    plane.stop()


def test_the_watch_sees_opted_in_deployments_and_survives_an_api_server_restart(own_plane: ControlPlane) -> None:
    seen: list[tuple[str, str]] = []
    stop = threading.Event()
    apps = client.AppsV1Api(api_client(own_plane))
    thread = threading.Thread(target=watch_deployments, args=(apps, seen.append, stop), daemon=True)
    thread.start()

    def wait_for(key: tuple[str, str]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and key not in seen:
            time.sleep(0.1)
        assert key in seen

    own_plane.kubectl("apply", "-f", "-", input=deployment("before"))
    own_plane.kubectl("apply", "-f", "-", input=deployment("ignored", opted_in=False))
    wait_for(("default", "before"))
    own_plane.restart_apiserver()
    own_plane.kubectl("apply", "-f", "-", input=deployment("after"))
    wait_for(("default", "after"))
    assert ("default", "ignored") not in seen
    stop.set()
