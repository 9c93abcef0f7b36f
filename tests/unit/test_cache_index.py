"""The caches' rules (controller/index.py) and their store (controller/cache.Store), without an API:
which copy is newer, what is kept, which Deployment a pod wakes, what a relist changes."""

from __future__ import annotations

import pytest

from customer_friendly import contract as c
from customer_friendly.controller import index
from customer_friendly.controller.cache import Store


def obj(name: str, version: str, namespace: str = "ns", labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, **extra) -> dict:
    meta = {"name": name, "namespace": namespace, "resourceVersion": version, "labels": labels or {},
            "annotations": annotations or {}}
    return {"metadata": meta, **extra}


def deployment(name: str, version: str = "1", opted_in: bool = True, annotations: dict[str, str] | None = None) -> dict:
    notes = {c.ENABLED: "true"} if opted_in else {}
    notes.update(annotations or {})
    return obj(name, version, annotations=notes, spec={"selector": {"matchLabels": {"app": name}}, "replicas": 2,
                                                       "template": {"spec": {"containers": [{"name": "puma"}]}}},
               status={"replicas": 2})


def pod(name: str, app: str, version: str = "1", owner: str | None = None) -> dict:
    template_hash = "5d8f9c7b6"
    meta_extra = {"ownerReferences": [{"kind": "ReplicaSet", "name": f"{owner or app}-{template_hash}"}]}
    found = obj(name, version, labels={"app": app, "pod-template-hash": template_hash})
    found["metadata"].update(meta_extra)
    return found


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("10", "9", True), ("9", "10", False), ("123", "123", False), ("124", "123", True),
    ("", "1", None), ("012", "1", None), ("abc", "1", None),
])
def test_resource_versions_compare_by_length_then_digits(a: str, b: str, expected: bool | None) -> None:
    assert index.newer(a, b) is expected


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    assert index.keep(obj("a", "10"), obj("a", "11"))
    assert index.keep(obj("a", "10"), obj("a", "10"))
    assert not index.keep(obj("a", "11"), obj("a", "10"))
    assert index.keep(None, obj("a", "1"))


def test_a_kept_pod_has_no_env_no_managed_fields_and_keeps_its_ports_and_status() -> None:
    full = pod("p", "web")
    full["metadata"]["managedFields"] = [{"manager": "kube-controller-manager"}]
    full["spec"] = {"containers": [{"name": "puma", "env": [{"name": "SECRET", "value": "x"}],
                                    "ports": [{"name": "http", "containerPort": 3000}]}],
                    "initContainers": [{"name": "cfo-agent", "restartPolicy": "Always",
                                        "ports": [{"name": "cfo-agent", "containerPort": 9443}]}],
                    "volumes": [{"name": "code"}], "nodeName": "n1"}
    full["status"] = {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    slim = index.slim_pod(full)
    assert "managedFields" not in slim["metadata"]
    assert slim["spec"]["containers"] == [{"name": "puma", "ports": [{"name": "http", "containerPort": 3000}]}]
    assert slim["spec"]["initContainers"][0]["ports"][0]["containerPort"] == 9443
    assert "volumes" not in slim["spec"] and slim["spec"]["nodeName"] == "n1"
    assert slim["status"] == full["status"]


def test_a_deployment_not_opted_in_is_kept_as_its_name_and_selector() -> None:
    kept = index.slim_deployment(deployment("other", opted_in=False))
    assert kept["spec"] == {"selector": {"matchLabels": {"app": "other"}}}
    whole = index.slim_deployment(deployment("web"))
    assert whole["spec"]["template"] and whole["status"]


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", {"app": "web"}), ("a=1,b=2", {"a": "1", "b": "2"}), ("", {}),
    ("app!=web", None), ("app==web", None), ("app in (a,b)", None), ("app", None),
])
def test_only_equality_selectors_are_read_from_the_cache(selector: str, expected: dict | None) -> None:
    assert index.parse_selector(selector) == expected


def test_a_pod_wakes_the_deployment_its_replica_set_is_named_after() -> None:
    web = deployment("web")
    assert index.owner_candidate(pod("web-1", "web")) == "web"
    assert index.deployments_of_pod(pod("web-1", "web"), web, list) == [("ns", "web")]


def test_a_pod_the_candidate_does_not_select_is_matched_by_selector_in_its_namespace() -> None:
    other = pod("x-1", "web", owner="x")  # a ReplicaSet named like another Deployment, labels of web
    assert index.deployments_of_pod(other, deployment("x"), lambda: [deployment("web"), deployment("db")]) == \
        [("ns", "web")]
    assert index.deployments_of_pod(other, None, lambda: [deployment("web")]) == [("ns", "web")]  # no owner known


def test_a_pod_of_a_deployment_not_opted_in_wakes_nothing() -> None:
    plain = deployment("plain", opted_in=False)

    def no_scan() -> list[dict]:
        raise AssertionError("the owner decides: no scan of the namespace")

    assert index.deployments_of_pod(pod("plain-1", "plain"), plain, no_scan) == []


def test_a_release_configmap_wakes_its_owner() -> None:
    cm = obj("web-release", "3")
    cm["metadata"]["ownerReferences"] = [{"kind": "Deployment", "name": "web"}]
    assert index.configmap_owner(cm) == ("ns", "web")
    assert index.configmap_owner(obj("loose", "1")) is None


def test_a_status_change_alone_is_no_news_to_a_deployment_but_a_record_is_to_its_group() -> None:
    before = deployment("web", "1")
    status_only = {**deployment("web", "2"), "status": {"replicas": 3}}
    recorded = deployment("web", "3", annotations={c.ROLLOUT: '{"phase": "Complete"}'})
    assert not index.deployment_news(before, status_only)
    assert index.deployment_news(before, recorded) and index.group_news(before, recorded)
    assert index.deployment_news(None, before) and index.deployment_news(before, None)


# --- the store ---------------------------------------------------------------------------------


def test_the_store_keeps_the_newest_copy_and_says_what_is_news() -> None:
    store = Store()
    assert store.put(obj("a", "5")) == (None, obj("a", "5"))
    assert store.put(obj("a", "4")) is None  # an older event, after a write's answer
    assert store.get(("ns", "a")) == obj("a", "5")
    assert store.put(obj("a", "5")) is None  # the watch bringing back the write: not news
    assert store.put(obj("a", "6")) == (obj("a", "5"), obj("a", "6"))


def test_a_deleted_object_is_not_brought_back_by_a_late_copy() -> None:
    store = Store()
    store.put(obj("a", "5"))
    assert store.remove(obj("a", "7")) == (obj("a", "5"), None)
    assert store.put(obj("a", "6")) is None
    assert store.get(("ns", "a")) is None
    assert store.put(obj("a", "8")) is not None  # created again later


def test_an_object_no_longer_wanted_can_come_back_at_the_same_version() -> None:
    store = Store()
    store.put(obj("a", "5"))
    store.remove(obj("a", "5"), deleted=False)
    assert store.put(obj("a", "5")) is not None


def test_selecting_by_labels_uses_the_index_and_sorts_by_name() -> None:
    store = Store()
    for name, app in (("web-b", "web"), ("web-a", "web"), ("db-a", "db")):
        store.put(pod(name, app))
    store.put(obj("web-z", "1", namespace="other", labels={"app": "web"}))
    assert [index.key_of(p)[1] for p in store.select("ns", {"app": "web"})] == ["web-a", "web-b"]
    store.put(obj("web-a", "2", labels={"app": "moved"}))  # relabelled: out of the index
    assert [index.key_of(p)[1] for p in store.select("ns", {"app": "web"})] == ["web-b"]
    assert len(store.in_namespace("ns")) == 3


def test_a_relist_replaces_what_it_lists_keeps_later_writes_and_reports_changes() -> None:
    store = Store()
    store.put(obj("kept", "3"))
    store.put(obj("gone", "4"))
    store.put(obj("written-later", "12"))
    changes = store.replace([obj("kept", "3"), obj("new", "9")], "10")
    assert sorted((index.key_of(old or new or {})[1], new is None) for old, new in changes) == \
        [("gone", True), ("new", False)]
    assert store.get(("ns", "written-later")) is not None
    assert store.get(("ns", "gone")) is None



def test_the_echo_of_a_write_that_the_watch_brings_before_its_answer_is_not_news() -> None:
    store = Store()
    store.put(obj("a", "5"))
    store.begin_write(("ns", "a"))
    assert store.put(obj("a", "6")) is None  # the echo, held while the write is in flight
    news, own = store.end_write(("ns", "a"), obj("a", "6"))
    assert news == [] and own == (obj("a", "5"), obj("a", "6"))


def test_another_writers_change_while_writing_is_still_news() -> None:
    store = Store()
    store.put(obj("a", "5"))
    store.begin_write(("ns", "a"))
    assert store.put(obj("a", "6")) is None  # someone else's change, just before ours
    store.put(obj("a", "7"))  # our echo
    news, _ = store.end_write(("ns", "a"), obj("a", "7"))
    assert [new for _, new in news] == [obj("a", "6")]
    assert store.get(("ns", "a")) == obj("a", "7")


def test_a_failed_write_hands_back_what_the_watch_brought() -> None:
    store = Store()
    store.begin_write(("ns", "a"))
    assert store.put(obj("a", "3")) is None
    news, own = store.end_write(("ns", "a"), None)
    assert news == [(None, obj("a", "3"))] and own is None
