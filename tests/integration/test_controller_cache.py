"""The controller's caches against a real API server (and kube-controller-manager making the pods):
they see opted-in Deployments and their new pods, a write is read back at once, a watch that
expired lists again, an API server restart is survived, and the controller completes a rollout
through real agents and real Puma reading only from them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from customer_friendly import contract as c
from customer_friendly.contract.objects import annotations_of
from customer_friendly.controller.cache import CachedKube, ClusterCache, Informer, Store
from customer_friendly.controller.index import Key, slim_deployment
from testbed.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def api_client(plane: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(plane.kubeconfig))


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of this module's own, with the controller-manager making pods and no webhook
    (which would inject its own agent port into the pods). Deployments have no watch cache in the
    API server, so their watches are etcd's: one from a version compacted away gets 410 Gone, as
    on a cluster that has run for a while (the cache would serve a young cluster's whole history)."""
    started = ControlPlane(tmp_path_factory.mktemp("cache-plane"),
                           apiserver_args=("--watch-cache-sizes=deployments.apps#0",)).start()
    yield started
    started.stop()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    pytest.fail(f"not within {timeout}s: {what}")


def deployment(name: str, replicas: int = 2, opted_in: bool = True, source: str = "file:///releases/{release}.tar.gz"
               ) -> dict:
    notes = {c.ENABLED: "true", c.RELEASE: "v1", c.SOURCE: source} if opted_in else {}
    return {"metadata": {"name": name, "annotations": notes}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "puma", "image": "acme/web"}]}}}}


class Watching:
    """A ClusterCache running against `plane`, recording the keys it wakes."""

    def __init__(self, plane: ControlPlane, watch_seconds: int = 30) -> None:
        self.api = api_client(plane)
        self.apps, self.core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        self.cache = ClusterCache(self.api, watch_seconds=watch_seconds)
        self.kube = CachedKube(self.api, self.cache)
        self.woken: list[Key] = []
        self.stop = threading.Event()
        self.cache.run(self.woken.append, self.stop)

    def namespace(self, name: str) -> str:
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def touch(self, namespace: str, pod: str) -> None:
        """A change to one pod (a label, as a person or a tool would add). Nothing here plays the
        kubelet: a pod becoming Running on a real kubelet is what tests/node rely on throughout."""
        self.core.patch_namespaced_pod(pod, namespace, {"metadata": {"labels": {"touched": "yes"}}})


@pytest.fixture
def watching(plane: ControlPlane) -> Iterator[Watching]:
    started = Watching(plane)
    yield started
    started.stop.set()


def test_the_cache_keeps_opted_in_deployments_their_new_pods_and_wakes_them_when_a_pod_changes(
        watching: Watching) -> None:
    ns = watching.namespace(f"seen-{time.time_ns()}")
    watching.apps.create_namespaced_deployment(ns, deployment("web"))
    watching.apps.create_namespaced_deployment(ns, deployment("plain", opted_in=False))
    pods = wait_for(lambda: len(watching.kube.pods(ns, "app=web")) == 2 and watching.kube.pods(ns, "app=web"),
                    "the controller-manager's two new pods in the cache")
    assert (ns, "web") in watching.woken and (ns, "plain") not in watching.woken
    wait_for(lambda: len(watching.core.list_namespaced_pod(ns, label_selector="app=plain").items) == 2,
             "the pods of the Deployment not opted in")
    assert watching.kube.pods(ns, "app=plain") == []  # not kept: no opted-in Deployment selects them
    assert watching.kube.deployment(ns, "web")["spec"]["template"]  # type: ignore[index]  # asserted present

    watching.woken.clear()
    watching.touch(ns, pods[0]["metadata"]["name"])
    wait_for(lambda: (ns, "web") in watching.woken, "a change to its pod wakes its Deployment")
    assert any((p["metadata"].get("labels") or {}).get("touched") for p in watching.kube.pods(ns, "app=web"))


def test_a_write_is_read_back_at_once_and_its_echo_wakes_nobody(watching: Watching) -> None:
    ns = watching.namespace(f"write-{time.time_ns()}")
    watching.apps.create_namespaced_deployment(ns, deployment("web"))
    pods = wait_for(lambda: len(watching.kube.pods(ns, "app=web")) == 2 and watching.kube.pods(ns, "app=web"),
                    "the pods in the cache")
    wait_for(lambda: watching.kube.configmap_release(ns, "web") is None, "(no ConfigMap yet)")
    record = json.dumps({"release": "v1", "phase": "Progressing"})
    watching.woken.clear()

    watching.kube.annotate_deployment(ns, "web", {c.ROLLOUT: record})
    assert annotations_of(watching.kube.deployment(ns, "web") or {})[c.ROLLOUT] == record  # no wait
    watching.kube.annotate_pod(ns, pods[0]["metadata"]["name"], {c.RELEASE: "v1"})
    marked = {p["metadata"]["name"]: annotations_of(p).get(c.RELEASE) for p in watching.kube.pods(ns, "app=web")}
    assert marked[pods[0]["metadata"]["name"]] == "v1"
    deployment_obj = watching.kube.deployment(ns, "web")
    assert deployment_obj is not None
    watching.kube.write_configmap(ns, deployment_obj, "v1", "file:///releases/{release}.tar.gz")
    assert watching.kube.configmap_release(ns, "web") == "v1"
    time.sleep(2)  # the watch brings all three back meanwhile: not news
    assert (ns, "web") not in watching.woken

    # Someone else's change is news.
    watching.apps.patch_namespaced_deployment("web", ns, {"metadata": {"annotations": {c.RELEASE: "v2"}}})
    wait_for(lambda: (ns, "web") in watching.woken, "another writer's change wakes the Deployment")
    assert annotations_of(watching.kube.deployment(ns, "web") or {})[c.RELEASE] == "v2"
    assert annotations_of(watching.kube.deployment(ns, "web") or {})[c.ROLLOUT] == record  # not lost


def test_a_watch_from_an_expired_version_lists_again(plane: ControlPlane) -> None:
    api = api_client(plane)
    apps = client.AppsV1Api(api)
    ns = f"expired-{time.time_ns()}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    apps.create_namespaced_deployment(ns, deployment("kept"))
    store = Store()
    stale = slim_deployment({**deployment("deleted-meanwhile"), "metadata": {
        "name": "deleted-meanwhile", "namespace": ns, "resourceVersion": "2", "annotations": {c.ENABLED: "true"}}})
    store.put(stale)
    changes: list[Any] = []
    informer = Informer("deployments", apps.list_deployment_for_all_namespaces, store, changes.append,
                        slim_deployment, watch_seconds=5)
    old = apps.list_namespaced_deployment(ns).metadata.resource_version
    apps.create_namespaced_deployment(ns, deployment("later"))
    apps.patch_namespaced_deployment("later", ns, {"metadata": {"labels": {"touched": "yes"}}})
    plane.compact_etcd()  # the creation of "later", the first event after `old`, is gone
    # Resuming from a version compacted away meanwhile: 410 Gone, then a list.
    informer.run(threading.Event(), max_iterations=2, version=old)
    assert informer.lists == 1
    assert store.get((ns, "deleted-meanwhile")) is None
    assert store.get((ns, "kept")) is not None
    assert any(new is None for _, new in changes)  # the relist reported the deletion


@pytest.fixture
def own_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of its own (no webhook, no controller-manager): this test restarts it."""
    started = ControlPlane(tmp_path / "plane", with_controller_manager=False).start()
    yield started
    started.stop()


def test_the_cache_sees_opted_in_deployments_and_survives_an_api_server_restart(own_plane: ControlPlane) -> None:
    watching = Watching(own_plane, watch_seconds=30)
    try:
        own_plane.kubectl("create", "namespace", "app")
        watching.apps.create_namespaced_deployment("app", deployment("before"))
        watching.apps.create_namespaced_deployment("app", deployment("ignored", opted_in=False))
        wait_for(lambda: ("app", "before") in watching.woken, "the Deployment before the restart")
        own_plane.restart_apiserver()
        watching.apps.create_namespaced_deployment("app", deployment("after"))
        wait_for(lambda: ("app", "after") in watching.woken, "the Deployment after the restart")
        assert watching.kube.deployment("app", "after") is not None
        assert ("app", "ignored") not in watching.woken
    finally:
        watching.stop.set()


# --- a rollout end to end --------------------------------------------------------------------
