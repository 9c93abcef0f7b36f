"""End to end: the webhook and the controller as separate processes, a real control plane,
real agents in front of real Pumas, nginx in front of those, and a constant POST load.

`kubectl annotate deploy web customer-friendly.dev/release=v2` is the whole user action.
"""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.harness.load import Load
from tests.integration.conftest import REPLICAS, Fleet

pytestmark = pytest.mark.integration

RATE = 200.0


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
