"""The controller rolling releases through real pods' agents on the real node: its process
killed mid-batch, a release superseded mid-rollout, a paused rollout, and pods added by
scaling up mid-rollout. Every test asserts what the node did: the same pod UIDs, no container
restarted, the links on each pod's volume, and how often each agent was asked."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from customer_friendly import contract as c
from testbed.load import Load
from testbed.node_app import INSTALL_NAMESPACE, WebApp, kill_container

pytestmark = pytest.mark.node


def wait_batch(app: WebApp, release: str, number: int = 1) -> dict[str, Any]:
    """Until batch `number` (or a later one) of `release` is in flight: recorded, agents asked."""
    seen: dict[str, Any] = {}

    def in_flight() -> bool:
        nonlocal seen
        seen = app.rollout()
        return seen.get("release") == release and bool(seen.get("batch")) and seen.get("batchNumber", 0) >= number

    app.node.wait(f"batch {number} of {release} in flight", in_flight, 120, interval=0.1)
    return seen


def pod_releases(app: WebApp) -> dict[str, str | None]:
    """customer-friendly.dev/release on each pod, as the controller marked it."""
    return {p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(c.RELEASE) for p in app.pods()}


def configmap(app: WebApp) -> dict[str, Any]:
    return json.loads(app.kubectl("get", "configmap", c.release_configmap_name(app.name), "-o", "json").stdout)


def configmap_release(app: WebApp) -> str:
    return configmap(app)["data"]["release"]


def event_reasons(app: WebApp) -> list[str]:
    items = json.loads(app.kubectl("get", "events", "--field-selector",
                                   f"involvedObject.kind=Deployment,involvedObject.name={app.name}", "-o",
                                   "json").stdout)["items"]
    return [e.get("reason") or "" for e in items]


def controller_metrics(app: WebApp) -> str:
    """/metrics of the controller that leads now, at its pod IP."""
    pod = next(p for p in app.product.pods("controller") if p["metadata"]["name"] == app.product.leader())
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/metrics", timeout=5) as response:
        return response.read().decode()


def test_the_controller_process_killed_mid_batch_finishes_the_rollout_asking_each_agent_once(app: WebApp) -> None:
    """SIGKILL, not a pod deletion: no SIGTERM reaches the controller, so it neither finishes its
    batch nor gives the Lease up. Whichever replica leads next (the killed one restarted by the
    kubelet under the same identity, or the standby once the Lease expires) picks the rollout up
    from the annotation and the agents' status."""
    app.replicas = 4
    app.deploy("v1", annotations={c.MAX_UNAVAILABLE: "2"})
    uids = app.uids()
    leader = app.product.leader()
    restarts_before = app.product.restart_count(leader, "controller")
    load = Load(app.cluster_ip(), 80, rate=50).start()
    try:
        time.sleep(1)
        app.kubectl("annotate", "deployment", "web", f"{c.RELEASE}=v2", "--overwrite")
        in_flight = wait_batch(app, "v2", number=2)
        kill_container(app.node, INSTALL_NAMESPACE, leader, "controller")
        app.node.wait("the killed controller to be restarted by the kubelet", lambda: app.product.restart_count(
            leader, "controller") == restarts_before + 1, 120)
        rollout = app.wait_rollout("v2", ("Complete",), timeout=240)
        time.sleep(1)
    finally:
        load.stop()

    assert in_flight["batch"], in_flight
    assert (rollout["updated"], rollout["total"], rollout["previous"]) == (4, 4, "v1"), rollout
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.samples)} failed: {failed[:3]}"
    assert {s.body.split()[0] for s in load.samples[-25:]} == {"v2"}
    assert app.uids() == uids
    assert set(app.restarts().values()) == {0}, app.restarts()
    assert set(pod_releases(app).values()) == {"v2"}
    for pod in app.pods():
        status = app.agent_status(pod)
        assert status["release"] == "v2"
        assert status["asked"] == {"v2": 1}, (pod["metadata"]["name"], status["asked"])
        assert app.links(pod) == ("releases/v2", "releases/v1")
    held = configmap(app)
    assert held["data"] == {"release": "v2", "source": app.product.sources.s3()}
    assert [(o["kind"], o["name"]) for o in held["metadata"]["ownerReferences"]] == [("Deployment", "web")]
    reasons = event_reasons(app)
    assert {"RolloutStarted", "BatchStarted", "BatchDone", "RolloutComplete"} <= set(reasons), reasons
    app.product.wait_available()
    metrics = controller_metrics(app)
    assert 'cfo_controller_rollouts_total{outcome="Complete"}' in metrics
    assert "cfo_controller_pods_updated_total" in metrics


def test_a_release_that_cannot_boot_is_asked_of_the_canary_only_and_rolled_back(app: WebApp) -> None:
    """The failure under load is in test_failures.py; here, what the controller did: one agent
    ever saw the broken release, the ConfigMap went back, and the Events say so."""
    app.replicas = 3
    app.deploy("v1")
    uids = app.uids()
    app.kubectl("annotate", "deployment", "web", f"{c.RELEASE}=broken", "--overwrite")
    rollout = app.wait_rollout("broken", ("RolledBack",), timeout=240)
    canary = rollout["failedPod"]
    assert canary in uids, rollout
    for pod in app.pods():
        name, status = pod["metadata"]["name"], app.agent_status(pod)
        # The canary was asked for broken once, then back to v1 (a no-op after the agent's own revert).
        assert status["asked"] == ({"broken": 1, "v1": 1} if name == canary else {}), (name, status["asked"])
        assert (status["release"], app.links(pod)) == ("v1", ("releases/v1", None))
    assert configmap_release(app) == "v1"
    assert set(pod_releases(app).values()) == {"v1"}
    reasons = event_reasons(app)
    assert {"RolloutFailed", "RollingBack", "RolledBack"} <= set(reasons), reasons
    assert app.uids() == uids
    assert set(app.restarts().values()) == {0}, app.restarts()


def test_two_releases_in_quick_succession_end_on_the_second(app: WebApp) -> None:
    """v3 arrives while the first batch of v2 runs: that batch finishes on v2, then every pod
    goes to v3; no other pod ever sees v2."""
    app.replicas = 3
    app.deploy("v1")
    uids = app.uids()
    app.kubectl("annotate", "deployment", "web", f"{c.RELEASE}=v2", "--overwrite")
    wait_batch(app, "v2")
    app.kubectl("annotate", "deployment", "web", f"{c.RELEASE}=v3", "--overwrite")
    rollout = app.wait_rollout("v3", ("Complete",), timeout=240)

    assert (rollout["updated"], rollout["total"]) == (3, 3), rollout
    assert configmap_release(app) == "v3"
    assert set(pod_releases(app).values()) == {"v3"}
    assert app.uids() == uids
    assert set(app.restarts().values()) == {0}, app.restarts()
    saw_v2 = 0
    for pod in app.pods():
        status = app.agent_status(pod)
        current, previous = app.links(pod)
        assert (current, status["release"]) == ("releases/v3", "v3")
        assert status["asked"].get("v3") == 1, status["asked"]
        # A pod asked for v2 served it before v3; the others went from v1 straight to v3.
        asked_v2 = status["asked"].get("v2", 0)
        assert previous == ("releases/v2" if asked_v2 else "releases/v1"), (pod["metadata"]["name"], status)
        saw_v2 += asked_v2
    assert 1 <= saw_v2 < 3
    app.wait_serving("v3")


def test_paused_stops_between_batches_and_resuming_finishes(app: WebApp) -> None:
    app.replicas = 4
    app.deploy("v1")
    uids = app.uids()
    app.kubectl("annotate", "deployment", "web", f"{c.PAUSED}=true", f"{c.RELEASE}=v2", "--overwrite")
    held = app.wait_rollout("v2", ("Paused",))
    assert held["updated"] == 0, held  # paused before the first batch: nothing moves
    for pod in app.pods():
        assert app.links(pod) == ("releases/v1", None)
        assert app.agent_status(pod)["asked"] == {}

    app.kubectl("annotate", "deployment", "web", f"{c.PAUSED}-")  # removing it carries on
    wait_batch(app, "v2")
    app.kubectl("annotate", "deployment", "web", f"{c.PAUSED}=true", "--overwrite")  # while a batch runs
    paused = app.wait_rollout("v2", ("Paused",))
    assert 1 <= paused["updated"] < 4, paused  # the batch in flight finished, then it stopped
    on_v2 = [p["metadata"]["name"] for p in app.pods() if app.links(p)[0] == "releases/v2"]
    assert len(on_v2) == paused["updated"]
    assert sorted(n for n, r in pod_releases(app).items() if r == "v2") == sorted(on_v2)
    for pod in app.pods():
        asked = app.agent_status(pod)["asked"]
        assert asked == ({"v2": 1} if pod["metadata"]["name"] in on_v2 else {}), (pod["metadata"]["name"], asked)

    result = app.cfo("resume", "web")
    assert result.returncode == 0, result.stdout + result.stderr
    rollout = app.wait_rollout("v2", ("Complete",), timeout=240)
    assert (rollout["updated"], rollout["total"]) == (4, 4), rollout
    assert app.uids() == uids
    assert set(app.restarts().values()) == {0}, app.restarts()
    for pod in app.pods():
        assert app.links(pod) == ("releases/v2", "releases/v1")
        assert app.agent_status(pod)["asked"] == {"v2": 1}


def test_pods_added_by_scaling_up_mid_rollout_start_on_the_new_release(app: WebApp) -> None:
    """The ConfigMap names v2 before any agent is asked, so pods created while the rollout runs
    start on v2 from their init container: verified by the controller, never asked."""
    app.replicas = 3
    app.deploy("v1")
    originals = app.uids()
    app.kubectl("annotate", "deployment", "web", f"{c.RELEASE}=v2", "--overwrite")
    wait_batch(app, "v2")
    app.kubectl("scale", "deployment", "web", "--replicas=5")
    app.replicas = 5
    app.wait_ready()

    last: dict[str, Any] = {}

    def complete_on_five() -> bool:
        nonlocal last
        last = app.rollout()
        return (last.get("release"), last.get("phase"), last.get("updated"), last.get("total"),
                bool(last.get("batch"))) == ("v2", "Complete", 5, 5, False)

    app.node.wait("the rollout of v2 to be Complete on 5 pods", complete_on_five, 240)
    uids = app.uids()
    added = sorted(set(uids) - set(originals))
    assert len(added) == 2 and {n: uids[n] for n in originals} == originals
    assert set(pod_releases(app).values()) == {"v2"}
    assert set(app.restarts().values()) == {0}, app.restarts()
    for pod in app.pods():
        name, status = pod["metadata"]["name"], app.agent_status(pod)
        assert status["release"] == "v2"
        if name in added:  # born on v2 from the ConfigMap: nothing to undo, never asked
            assert app.links(pod) == ("releases/v2", None)
            assert status["asked"] == {}, (name, status["asked"])
        else:
            assert app.links(pod) == ("releases/v2", "releases/v1")
            assert status["asked"] == {"v2": 1}, (name, status["asked"])
    app.wait_serving("v2")
