"""App-group rules and object readers of the shared core: plain data in, answers out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from customer_friendly import contract as c
from customer_friendly.contract.groups import GroupGate, gate, members, role_of
from customer_friendly.contract.objects import is_opted_in, label_selector, pod_running, pod_selector
from customer_friendly.contract.rollout import Rollout


def deployment(name: str, role: str | None = None, release: str = "v2", rollout: dict[str, Any] | None = None,
               app: str | None = "shop", enabled: str = "true", restart: str | None = None) -> dict[str, Any]:
    annotations = {c.ENABLED: enabled, c.RELEASE: release}
    for key, value in ((c.APP, app), (c.ROLE, role), (c.RESTART, restart)):
        if value is not None:
            annotations[key] = value
    if rollout is not None:
        annotations[c.ROLLOUT] = json.dumps(rollout)
    return {"metadata": {"name": name, "namespace": "shop", "annotations": annotations},
            "spec": {"selector": {"matchLabels": {"app": name, "tier": "a"}}}}


def rollout(phase: str, release: str = "v2", **extra: Any) -> dict[str, Any]:
    return {"release": release, "previous": "v1", "phase": phase, **extra}


@pytest.mark.parametrize(("annotations", "role"), [
    ({}, "web"),
    ({c.RESTART: "hot"}, "web"),
    ({c.RESTART: "drain"}, "worker"),
    ({c.RESTART: "signal:HUP"}, "worker"),
    ({c.RESTART: "drain", c.ROLE: "cron"}, "cron"),
    ({c.ROLE: "nonsense"}, "web"),
])
def test_a_role_comes_from_its_annotation_else_from_the_restart_mode(annotations: dict[str, str],
                                                                     role: str) -> None:
    assert role_of(annotations) == role


def test_members_are_the_opted_in_deployments_of_the_app_in_role_then_name_order() -> None:
    found = members([deployment("cron", "cron"), deployment("b-web"), deployment("worker", "worker"),
                     deployment("a-web"), deployment("other", app="blog"), deployment("off", enabled="false"),
                     deployment("typo", enabled="yes")], "shop")
    assert [d["metadata"]["name"] for d in found] == ["a-web", "b-web", "worker", "cron"]


def test_a_web_deployment_waits_for_nobody() -> None:
    web = deployment("web")
    assert gate(web, [web, deployment("worker", "worker")]) == GroupGate()


def test_a_worker_waits_until_web_has_completed_the_same_release() -> None:
    worker = deployment("worker", "worker")
    for web_rollout in (None, rollout("Progressing"), rollout("Complete", release="v1"),
                        rollout("Complete", batch=["web-0"])):
        waiting = gate(worker, [deployment("web", rollout=web_rollout), worker])
        assert waiting.waiting_for == "web (app shop) to complete v2" and waiting.failed is None
    assert gate(worker, [deployment("web", rollout=rollout("Complete")), worker]) == GroupGate()


def test_cron_waits_for_every_earlier_role_and_names_them_sorted() -> None:
    cron = deployment("cron", "cron")
    peers = [cron, deployment("web-b"), deployment("web-a", rollout=rollout("Complete")), deployment("w", "worker")]
    assert gate(cron, peers).waiting_for == "w, web-b (app shop) to complete v2"


def test_a_member_that_failed_the_same_release_fails_the_others() -> None:
    worker = deployment("worker", "worker")
    failed = deployment("web", rollout=rollout("RolledBack", reason="pod web-0: restart not done"))
    assert gate(worker, [failed, worker]).failed == "web failed: pod web-0: restart not done"
    earlier = deployment("web", rollout=rollout("Failed", release="v1", reason="old"))
    assert gate(worker, [earlier, worker]).failed is None  # another release's failure is not this one's


def test_a_deployment_without_an_app_has_no_gate() -> None:
    lone = deployment("lone", app=None)
    assert gate(lone, [lone, deployment("web")]) == GroupGate()


def test_objects_are_read_the_same_way_everywhere() -> None:
    assert is_opted_in(deployment("a")) and not is_opted_in(deployment("b", enabled="TRUE"))
    assert not is_opted_in({"metadata": {}})
    assert label_selector({"tier": "a", "app": "web"}) == "app=web,tier=a"
    assert pod_selector(deployment("web")) == "app=web,tier=a"
    running = {"metadata": {}, "status": {"phase": "Running", "podIP": "10.0.0.2"}}
    assert pod_running(running)
    assert not pod_running({**running, "metadata": {"deletionTimestamp": "now"}})
    assert not pod_running({"status": {"phase": "Pending", "podIP": "10.0.0.2"}})


def test_the_rollout_record_round_trips_with_its_wire_names() -> None:
    record = Rollout("v2", "v1", "Progressing", updated=1, total=4, batch=("web-1",), batch_release="v2",
                     batch_started_at=12.5, batch_number=2, retry="r1", started_at=10.0)
    wire = json.loads(record.to_annotation())
    assert wire["batchNumber"] == 2 and wire["batchRelease"] == "v2" and wire["rollingBack"] is False
    assert Rollout.from_annotation(record.to_annotation()) == record


@pytest.mark.parametrize("text", [None, "", "not json", "[]", '{"release": "v1"}', '{"phase": "Complete"}',
                                  '{"release": "v1", "phase": "Sideways"}', '{"release": 3, "phase": "Complete"}',
                                  "[" * 100_000])
def test_anything_that_is_not_a_rollout_record_reads_as_none(text: str | None) -> None:
    assert Rollout.from_annotation(text) is None


def test_a_rollout_is_settled_only_in_a_final_phase_with_nothing_in_flight() -> None:
    assert Rollout("v2", "v1", "Complete").succeeded
    assert Rollout("v2", "v1", "RolledBack").settled and not Rollout("v2", "v1", "RolledBack").succeeded
    assert not Rollout("v2", "v1", "Failed", rolling_back=True).settled
    assert not Rollout("v2", "v1", "Complete", batch=("a",)).settled
    assert not Rollout("v2", "v1", "Progressing").settled
    assert Rollout("v2", "v1", "Failed", rolling_back=True).wanted == "v1"
