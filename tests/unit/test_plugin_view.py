"""`kubectl cfo` views: pure functions from API objects to rows and text."""

from __future__ import annotations

import json

from customer_friendly import contract as c
from customer_friendly.contract.rollout import Rollout
from customer_friendly.kubectl_cfo.view import fleet_rows, group_rows, history_rows, pod_rows, progress_line, table


def pod(name: str, release: str | None, ip: str = "10.0.0.5", ready: bool = True) -> dict:
    return {"metadata": {"name": name, "annotations": {c.RELEASE: release} if release else {}},
            "status": {"podIP": ip, "phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def deployment(name: str, namespace: str, release: str, rollout: dict | None = None) -> dict:
    annotations = {c.ENABLED: "true", c.RELEASE: release}
    if rollout:
        annotations[c.ROLLOUT] = json.dumps(rollout)
    return {"metadata": {"name": name, "namespace": namespace, "annotations": annotations}}


def test_pod_rows_are_sorted_and_show_the_release() -> None:
    rows = pod_rows([pod("web-b", "v2"), pod("web-a", None, ready=False)])
    assert [(r["pod"], r["release"], r["ready"]) for r in rows] == [("web-a", "", False), ("web-b", "v2", True)]


def test_pod_rows_say_where_a_drained_pod_is() -> None:
    gated = {"readinessGates": [{"conditionType": c.IN_PLACE_READY}]}
    pods = [pod("web-a", "v1"), {**pod("web-b", "v1"), "spec": gated}, {**pod("web-c", "v1"), "spec": gated},
            {**pod("web-d", "v2"), "spec": gated}]
    pods[2]["status"]["conditions"].append({"type": c.IN_PLACE_READY, "status": "False"})
    pods[3]["status"]["conditions"].append({"type": c.IN_PLACE_READY, "status": "True"})
    assert [r["traffic"] for r in pod_rows(pods)] == ["", "not yet in", "held out", "in"]


def test_fleet_rows_count_what_pods_really_run() -> None:
    web = deployment("web", "shop", "v3", {"release": "v3", "previous": "v2", "phase": "Progressing"})
    rows = fleet_rows([web], {("shop", "web"): [pod("a", "v3"), pod("b", "v2"), pod("c", None)]})
    assert rows == [{"namespace": "shop", "deployment": "web", "wanted": "v3", "phase": "Progressing", "pods": 3,
                     "running": {"unknown": 1, "v2": 1, "v3": 1}}]


def test_group_rows_keep_the_groups_order_and_each_deployments_own_role() -> None:
    """Names sort differently from roles (cron < web < worker): each row keeps its own role."""
    complete = {"release": "v2", "previous": "v1", "phase": "Complete"}
    web, worker, cron = (deployment(name, "shop", "v2", complete) for name in ("web", "worker", "cron"))
    worker["metadata"]["annotations"][c.RESTART] = "drain"
    cron["metadata"]["annotations"].update({c.RESTART: "drain", c.ROLE: "cron"})
    pods = {("shop", "web"): [pod("w1", "v2"), pod("w2", "v2")], ("shop", "worker"): [pod("k1", "v2")],
            ("shop", "cron"): []}
    rows = group_rows([web, worker, cron], pods)
    assert [(r["deployment"], r["role"], r["pods"]) for r in rows] == [
        ("web", "web", 2), ("worker", "worker", 1), ("cron", "cron", 0)]


def test_history_keeps_only_our_events_in_time_order() -> None:
    events = [
        {"firstTimestamp": "2026-01-01T10:00:02Z", "reason": "RolloutComplete", "type": "Normal", "message": "done",
         "source": {"component": "customer-friendly-controller"}},
        {"firstTimestamp": "2026-01-01T10:00:01Z", "reason": "RolloutStarted", "type": "Normal", "message": "go",
         "source": {"component": "customer-friendly-controller"}},
        {"firstTimestamp": "2026-01-01T10:00:00Z", "reason": "ScalingReplicaSet", "type": "Normal", "message": "x",
         "source": {"component": "deployment-controller"}},
    ]
    assert [r["reason"] for r in history_rows({}, events)] == ["RolloutStarted", "RolloutComplete"]


def test_tables_align_columns_and_mark_empty_cells() -> None:
    text = table([{"a": "x", "b": ""}, {"a": "longer", "b": {"v1": 2}}], [("A", "a"), ("B", "b")])
    assert text.splitlines() == ["A        B", "x        -", "longer   v1=2"]


def test_the_progress_line_shows_pods_batch_and_time() -> None:
    rollout = Rollout.from_wire({"release": "v2", "previous": "v1", "phase": "Progressing", "updated": 1,
                                 "total": 4, "batchNumber": 2, "batch": ["a", "b"]})
    assert rollout is not None
    line = progress_line(rollout, 12.4, width=8)
    assert line == "[##------] 1/4 pods on v2  Progressing  batch 2 (2 pods)  12s"
