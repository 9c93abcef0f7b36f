"""Day-two operations on the real node: our own pods lost mid-work (the controller's leader, a
webhook replica), pods added after a release, a native rolling update of an opted-in
Deployment, and an uninstall that leaves the apps serving."""

from __future__ import annotations

import json
import time

import pytest

from customer_friendly import contract as c
from testbed.load import Load
from testbed.node_app import INSTALL_NAMESPACE, WebApp

pytestmark = pytest.mark.node


def injected(deployment: dict) -> tuple[int, int]:
    spec = deployment["spec"]["template"]["spec"]
    names = [ct["name"] for ct in spec.get("initContainers", []) + spec["containers"]]
    return names.count(c.FETCH_CONTAINER), names.count(c.AGENT_CONTAINER)


def leader(app: WebApp) -> str:
    lease = json.loads(app.node.kubectl("-n", INSTALL_NAMESPACE, "get", "lease", "customer-friendly-controller",
                                        "-o", "json").stdout)
    return lease["spec"]["holderIdentity"]


def test_the_controller_leader_deleted_mid_rollout_hands_over_and_no_agent_is_asked_twice(app: WebApp) -> None:
    app.replicas = 4
    app.deploy("v1")
    first = leader(app)
    app.kubectl("annotate", "deployment", "web", f"{c.RELEASE}=v2", "--overwrite")
    app.node.wait("the first batch to start", lambda: app.rollout().get("release") == "v2"
                  and app.rollout().get("batchNumber", 0) >= 1, 60, interval=0.1)
    app.node.kubectl("-n", INSTALL_NAMESPACE, "delete", "pod", first, "--wait=false")
    app.wait_rollout("v2", ("Complete",), timeout=180)
    assert leader(app) != first
    for pod in app.pods():
        status = app.agent_status(pod)
        assert status["release"] == "v2"
        assert status["asked"].get("v2") == 1, (pod["metadata"]["name"], status["asked"])
    assert set(app.restarts().values()) == {0}
    app.product.wait_available()


def test_with_a_webhook_replica_deleted_the_other_one_still_injects(app: WebApp) -> None:
    app.replicas = 1
    app.prepare()
    victim = app.product.pods("webhook")[0]["metadata"]["name"]
    app.node.kubectl("-n", INSTALL_NAMESPACE, "delete", "pod", victim, "--wait=false")
    for attempt in range(8):  # through the whole preStop window and the replacement's start
        app.name = f"web{attempt}"
        result = app.apply(app.manifest("v1", app.product.sources.s3()), check=False)
        assert result.returncode == 0, result.stderr
        assert injected(app.deployment()) == (1, 1)
        time.sleep(1)
    app.product.wait_available()


def test_pods_added_after_a_release_and_a_native_rolling_update_start_on_the_current_release(app: WebApp) -> None:
    app.replicas = 2
    app.create(app.manifest("v1", app.product.sources.s3()))
    app.wait_ready(serving="v1")
    result = app.cfo("release", "web", "v2", "--wait", "--timeout", "180")
    assert result.returncode == 0, result.stdout + result.stderr

    app.kubectl("scale", "deployment", "web", "--replicas=3")
    app.replicas = 3
    for pod in app.wait_ready():
        assert app.links(pod)[0] == "releases/v2"
        assert app.agent_status(pod)["release"] == "v2"

    old_sets = app.replicasets()
    app.kubectl("set", "env", "deployment/web", "-c", "puma", "FEATURE_FLAG=on")
    app.node.wait("the native rolling update", lambda: len(app.replicasets()) == len(old_sets) + 1
                  and app.deployment()["status"].get("updatedReplicas") == 3
                  and len(app.ready_pods()) == 3 == len(app.pods()), 240)
    assert injected(app.deployment()) == (1, 1)
    for pod in app.pods():
        assert injected({"spec": {"template": pod}}) == (1, 1)
        assert app.links(pod)[0] == "releases/v2"
    load = Load(app.cluster_ip(), 80, rate=50).start()
    time.sleep(1)
    load.stop()
    assert {s.body.split()[0] for s in load.samples} == {"v2"}


def test_uninstall_removes_everything_we_created_and_the_apps_keep_serving(app: WebApp) -> None:
    app.replicas = 2
    app.create(app.manifest("v1", app.product.sources.s3()))
    app.wait_ready(serving="v1")
    load = Load(app.cluster_ip(), 80, rate=50).start()
    try:
        app.product.admin("uninstall")
        app.node.wait("the install namespace to go", lambda: app.node.kubectl(
            "get", "namespace", INSTALL_NAMESPACE, check=False).returncode != 0, 120)
        time.sleep(2)
    finally:
        load.stop()
    assert not load.failures(), load.failures()[:3]
    for kind in ("mutatingwebhookconfigurations", "clusterroles", "clusterrolebindings"):
        names = app.node.kubectl("get", kind, "-o", "name").stdout.split()
        assert not [n for n in names if "customer-friendly" in n], names
    assert {s.body.split()[0] for s in load.samples} == {"v1"}
    assert len(app.ready_pods()) == 2
    app.product.install()  # the rest of the session keeps its product
