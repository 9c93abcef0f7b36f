"""Reading the Kubernetes objects every component sees (Deployments, pods) as plain dicts: their
annotations, whether they are opted in, their pods' label selector. Pure, and written once, so
that the webhook, the controller and `kubectl cfo` agree on what "opted in" means."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from customer_friendly.contract.settings import Refusal, opted_in

Obj = dict[str, Any]


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def name_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def enabled(annotations: Mapping[str, str] | None) -> bool:
    """The enabled annotation says "true"; a malformed value counts as not opted in here
    (`settings.opted_in`, which the webhook uses, refuses it by name instead)."""
    try:
        return opted_in(annotations)
    except Refusal:
        return False


def is_opted_in(obj: Mapping[str, Any]) -> bool:
    """A Deployment (as a dict) that is opted in: `enabled` on its annotations."""
    return enabled(annotations_of(obj))


def label_selector(match_labels: Mapping[str, str]) -> str:
    """A matchLabels map as the API's labelSelector query (`a=1,b=2`, sorted)."""
    return ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))


def pod_selector(deployment: Mapping[str, Any]) -> str:
    """The label selector of a Deployment's pods."""
    return label_selector(((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})


def pod_running(pod: Mapping[str, Any]) -> bool:
    """Running with an IP and not being deleted: its agent can be asked."""
    status = pod.get("status") or {}
    return bool(status.get("podIP")) and status.get("phase") == "Running" and \
        not (pod.get("metadata") or {}).get("deletionTimestamp")
