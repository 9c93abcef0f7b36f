"""traffic: drain on the real node: a Puma that cannot phase (single mode, no workers) is
restarted one pod at a time after the controller has held it out of the Service's
EndpointSlices with its readiness gate, under load through the ClusterIP: nothing is dropped,
the pods are the same pods, and every gate is open again at the end."""

from __future__ import annotations

import time
from typing import Any

import pytest

from customer_friendly import contract as c
from customer_friendly.contract.readiness import read_gate
from testbed.load import Load
from testbed.node_app import Peaks, WebApp, node_release

pytestmark = pytest.mark.node

DRAIN = {c.TRAFFIC: "drain", c.RESTART: "hot", c.SETTLE_SECONDS: "2"}


def held_out(app: WebApp) -> int:
    return sum(1 for pod in app.pods() if read_gate(pod).open is False)


def serving_slice_pods(app: WebApp) -> int:
    """Pods the Service's EndpointSlices list as ready, as kube-proxy sees them."""
    out = app.kubectl("get", "endpointslices", "-l", f"kubernetes.io/service-name={app.name}", "-o",
                      "jsonpath={range .items[*].endpoints[*]}{.conditions.ready}{\"\\n\"}{end}").stdout
    return out.split().count("true")


def test_a_drain_first_hot_restart_of_a_single_mode_puma_drops_nothing_under_load(app: WebApp) -> None:
    for release in ("s1", "s2"):
        app.product.sources.publish(release, node_release(release, workers=0))
    app.replicas = 3
    app.deploy("s1", annotations=DRAIN)
    uids, restarts = app.uids(), app.restarts()
    for pod in app.pods():
        assert {"conditionType": c.IN_PLACE_READY} in pod["spec"]["readinessGates"]
        assert read_gate(pod).open is True  # opened by the controller, or the pod would not be Ready

    load = Load(app.cluster_ip(), 80, rate=100).start()
    time.sleep(2)
    with Peaks(held_out=lambda: held_out(app),
               out_of_slices=lambda: app.replicas - serving_slice_pods(app)) as peaks:
        result = app.cfo("release", "web", "s2", "--wait", "--timeout", "240")
    time.sleep(2)
    load.stop()

    assert result.returncode == 0, result.stdout + result.stderr + app.controller_log()
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.samples)} failed: {failed[:3]}"
    assert {s.body.split()[0] for s in load.samples[-50:]} == {"s2"}
    # One pod at a time (max-unavailable 1) left the Service, and it really left the slices.
    assert peaks.peak["held_out"] == 1 and peaks.peak["out_of_slices"] >= 1, peaks.peak
    assert app.uids() == uids and app.restarts() == restarts
    pods: list[dict[str, Any]] = app.pods()
    assert all(read_gate(pod).open is True for pod in pods)
    for pod in pods:
        status = app.agent_status(pod)
        assert (status["release"], status["asked"]) == ("s2", {"s2": 1}), status
    events = [reason for reason, _ in app.events()]
    assert "RolloutComplete" in events
    table = app.cfo("status", "web")
    header, *rows = table.stdout.split("\n\n")[0].splitlines()
    assert header.split() == ["POD", "IP", "PHASE", "READY", "RELEASE", "TRAFFIC"], table.stdout
    assert [row.split()[-2:] for row in rows] == [["s2", "in"]] * app.replicas, table.stdout
