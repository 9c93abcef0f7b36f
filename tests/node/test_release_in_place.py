"""An opted-in Puma Deployment on the real node: it starts from a release fetched into a
dynamically provisioned per-pod volume, and a release under load through the Service's
ClusterIP moves every pod in place: same pods, no restarts, no new ReplicaSet, no extra pods."""

from __future__ import annotations

import json
import time

import pytest

from customer_friendly import contract as c
from testbed.load import Load
from testbed.node import STORAGE_CLASS
from testbed.node_app import Peaks, WebApp

pytestmark = pytest.mark.node


def serving(app: WebApp, samples: int = 30) -> set[str]:
    """The releases that answer through the ClusterIP (each answer is `<release> <worker pid>`)."""
    load = Load(app.cluster_ip(), 80, rate=100).start()
    time.sleep(samples / 100)
    load.stop()
    assert not load.failures(), load.failures()[:3]
    return {s.body.split()[0] for s in load.samples}


def test_an_opted_in_deployment_starts_on_real_pods_with_its_release_on_a_provisioned_volume(app: WebApp) -> None:
    app.create(app.manifest("v1", app.product.sources.s3()))
    pods = app.wait_ready(serving="v1")
    assert len(pods) == 3
    for pod in pods:
        claim = json.loads(app.kubectl("get", "pvc", f"{pod['metadata']['name']}-{c.CODE_VOLUME}", "-o",
                                       "json").stdout)
        assert claim["status"]["phase"] == "Bound"
        assert claim["spec"]["storageClassName"] == STORAGE_CLASS
        status = pod["status"]
        fetch = next(s for s in status["initContainerStatuses"] if s["name"] == c.FETCH_CONTAINER)
        assert fetch["state"]["terminated"]["exitCode"] == 0
        sidecar = next(s for s in status["initContainerStatuses"] if s["name"] == c.AGENT_CONTAINER)
        assert sidecar["ready"] is True and sidecar["started"] is True
        volume = app.volume(pod)
        assert app.links(pod) == ("releases/v1", None)
        assert (volume / "releases" / "v1" / ".cfo-release.json").is_file()
        agent = app.agent_status(pod)
        assert (agent["release"], agent["state"]) == ("v1", "idle")
        spec = pod["spec"]
        puma = next(ct for ct in spec["containers"] if ct["name"] == "puma")
        assert puma["lifecycle"]["preStop"] == {"sleep": {"seconds": 3}}
        # We want preStop 3 + longest request 5 + the policy's margin 10 = 18, but the API server
        # defaults the field to 30 before admission, and we never lower a value we find.
        assert spec["terminationGracePeriodSeconds"] == 30
        assert spec["shareProcessNamespace"] is True
    assert serving(app) == {"v1"}
    annotations = {p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(c.RELEASE)
                   for p in app.pods()}
    app.node.wait("the controller to mark every pod with v1", lambda: set(
        (p["metadata"].get("annotations") or {}).get(c.RELEASE) for p in app.pods()) == {"v1"}, 60)
    assert len(annotations) == 3


def test_a_release_under_load_moves_every_pod_in_place_and_drops_nothing(app: WebApp) -> None:
    app.deploy("v1")
    before_uids, before_sets = app.uids(), app.replicasets()
    workers_before = {s for s in serving(app)}
    assert workers_before == {"v1"}

    load = Load(app.cluster_ip(), 80, rate=100).start()
    time.sleep(2)
    with Peaks(pods=lambda: len(app.pods())) as peaks:
        result = app.cfo("release", "web", "v2", "--wait", "--timeout", "240")
    time.sleep(2)
    load.stop()

    assert result.returncode == 0, result.stdout + result.stderr + app.controller_log()
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.samples)} failed: {failed[:3]}"
    assert {s.body.split()[0] for s in load.samples[-50:]} == {"v2"}
    assert app.uids() == before_uids
    assert app.replicasets() == before_sets
    assert set(app.restarts().values()) == {0}, app.restarts()
    assert peaks.peak["pods"] == 3
    for pod in app.pods():
        assert app.agent_status(pod)["release"] == "v2"
        assert app.links(pod) == ("releases/v2", "releases/v1")
    rollout = app.rollout()
    assert (rollout["phase"], rollout["release"], rollout["previous"]) == ("Complete", "v2", "v1")
    p99 = Load.p99(load.samples) * 1000
    print(f"\nrelease v2 on the real node: {len(load.samples)} sent, 0 failed, p99 {p99:.1f} ms")
