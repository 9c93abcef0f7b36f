"""The rules the controller's caches keep, apart from their I/O: which copy of an object is newer,
what of an object is kept, which Deployment a pod or a ConfigMap wakes, and which changes are
news. Pure, so they are unit-tested alone (controller/cache.py holds the stores and the watches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from customer_friendly.contract.objects import Obj, annotations_of, is_opted_in

Key = tuple[str, str]
"""(namespace, name)"""

MANAGED_LABEL = ("app.kubernetes.io/managed-by", "customer-friendly-operator")
"""The label on the release ConfigMaps the controller writes: the ConfigMap watch selects on it."""


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def version_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def newer(a: str, b: str) -> bool | None:
    """Whether resourceVersion `a` is later than `b`; None when either is not comparable.

    Since Kubernetes 1.35 (KEP-5504, stable) resource versions of one resource are positive
    decimal integers without leading zeros, compared by length and then digit by digit; that
    is what lets the write of a patch's answer and the watch's older events meet in one store
    without the older one winning."""
    if not (_comparable(a) and _comparable(b)):
        return None
    return (len(a), a) > (len(b), b)


def _comparable(version: str) -> bool:
    return version.isascii() and version.isdigit() and not version.startswith("0")


def keep(current: Mapping[str, Any] | None, incoming: Mapping[str, Any]) -> bool:
    """Whether `incoming` replaces `current`: it is not older. Versions that cannot be compared
    (an API server before 1.35 could in principle send such) replace, as a plain informer would."""
    if current is None:
        return True
    later = newer(version_of(current), version_of(incoming))
    return later is not True


def _without_managed_fields(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k != "managedFields"}


def slim_deployment(deployment: Mapping[str, Any]) -> Obj:
    """What is kept of a Deployment: everything but managedFields (the bulk of a large object,
    read by nobody here); of one not opted in, only what maps its pods to it."""
    meta = _without_managed_fields(deployment.get("metadata") or {})
    if not is_opted_in(deployment):
        spec = deployment.get("spec") or {}
        return {"metadata": meta, "spec": {"selector": spec.get("selector")}}
    return {**deployment, "metadata": meta}


def _container_view(container: Mapping[str, Any]) -> dict[str, Any]:
    return {k: container[k] for k in ("name", "ports", "restartPolicy") if k in container}


def slim_pod(pod: Mapping[str, Any]) -> Obj:
    """What is kept of a pod: its metadata (no managedFields), its status, and of its spec the
    containers' names and ports (where the agent listens). Not env, commands or volumes: the
    controller reads none of it, and a pod's env can hold secrets."""
    spec = pod.get("spec") or {}
    kept_spec: dict[str, Any] = {
        part: [_container_view(ct) for ct in spec.get(part) or []] for part in ("initContainers", "containers")}
    for field in ("nodeName", "readinessGates"):
        if field in spec:
            kept_spec[field] = spec[field]
    return {"metadata": _without_managed_fields(pod.get("metadata") or {}), "spec": kept_spec,
            "status": pod.get("status") or {}}


def parse_selector(selector: str) -> dict[str, str] | None:
    """`a=1,b=2` (contract.objects.label_selector's form) as a map; None for anything else
    (set-based requirements, `!=`), which the caller answers from the API instead."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in selector.split(","))):
        name, sep, value = part.partition("=")
        if not sep or value.startswith("=") or name.endswith("!") or not name:
            return None
        labels[name.strip()] = value.strip()
    return labels


def matches(match_labels: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in match_labels.items())


def selector_labels(deployment: Mapping[str, Any]) -> dict[str, str] | None:
    """A Deployment's matchLabels; None when its selector has matchExpressions or nothing (the
    controller reads pods by matchLabels only, contract.objects.pod_selector)."""
    selector = (deployment.get("spec") or {}).get("selector") or {}
    if selector.get("matchExpressions") or not selector.get("matchLabels"):
        return None
    return dict(selector["matchLabels"])


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def owner_candidate(pod: Mapping[str, Any]) -> str | None:
    """The Deployment a pod's ReplicaSet most likely belongs to: the deployment controller names a
    ReplicaSet `<deployment>-<pod-template-hash>` and labels its pods with that hash. Only a
    candidate: the caller checks that the Deployment exists and selects the pod."""
    template_hash = labels_of(pod).get("pod-template-hash")
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        name = str(ref.get("name") or "")
        if ref.get("kind") == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
            return name[: -len(template_hash) - 1]
    return None


def deployments_of_pod(pod: Mapping[str, Any], candidate: Mapping[str, Any] | None,
                       in_namespace: Callable[[], Iterable[Mapping[str, Any]]]) -> list[Key]:
    """The opted-in Deployments whose selector takes `pod`. When the owner candidate selects it,
    that one decides (the usual case, one lookup; a pod of a Deployment not opted in wakes
    nothing without a scan); otherwise any opted-in one of the namespace (`in_namespace()`) that
    selects it."""
    labels = labels_of(pod)
    if candidate is not None:
        wanted = selector_labels(candidate)
        if wanted is not None and matches(wanted, labels):
            return [key_of(candidate)] if is_opted_in(candidate) else []
    found = []
    for deployment in in_namespace():
        wanted = selector_labels(deployment)
        if is_opted_in(deployment) and wanted is not None and matches(wanted, labels):
            found.append(key_of(deployment))
    return found


def configmap_owner(configmap: Mapping[str, Any]) -> Key | None:
    """The Deployment a release ConfigMap belongs to (its controller owner reference)."""
    namespace = key_of(configmap)[0]
    for ref in (configmap.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Deployment" and ref.get("name"):
            return namespace, str(ref["name"])
    return None


def _deployment_view(deployment: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """What a reconcile reads of a Deployment: not its status (the ReplicaSet controller's counts,
    which change often while its pods come and go)."""
    if deployment is None:
        return (None,)
    meta = deployment.get("metadata") or {}
    return annotations_of(deployment), deployment.get("spec"), meta.get("deletionTimestamp"), meta.get("uid")


def deployment_news(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Whether a change to a Deployment is news to its reconcile: a release asked for, a pause,
    new replicas, a deletion; not a change of its status alone. (The controller's own writes never
    get here as news: the cache holds their answer before the watch brings them back.)"""
    return _deployment_view(old) != _deployment_view(new)


def group_news(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Whether a change to a Deployment is news to the other members of its app group: they gate
    on its annotations, the rollout record included."""
    return annotations_of(old or {}) != annotations_of(new or {})
