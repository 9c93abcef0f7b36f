"""The in-place-ready readiness gate of traffic: drain, read and written the same way everywhere.

The webhook puts the gate in the pod template; the kubelet then counts a pod Ready only while
the pod's condition of that type is True. The controller sets it False to take a pod out of the
Service's EndpointSlices before its restart, and True once it serves again (OpenKruise's
InPlaceUpdateReady works the same way). Pure: plain dicts in, plain values out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from customer_friendly import contract as c


@dataclass(frozen=True)
class Gate:
    gated: bool = False
    """The pod spec has the gate."""
    open: bool | None = None
    """The condition: True, False, or None when it was never set."""
    closed_at: float | None = None
    """When it last became False (its lastTransitionTime), as a Unix time."""


def _timestamp(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def read_gate(pod: Mapping[str, Any]) -> Gate:
    """The gate of a pod as the API returns it."""
    gates = (pod.get("spec") or {}).get("readinessGates") or []
    gated = any(isinstance(g, Mapping) and g.get("conditionType") == c.IN_PLACE_READY for g in gates)
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == c.IN_PLACE_READY:
            is_open = condition.get("status") == "True"
            return Gate(gated, is_open, None if is_open else _timestamp(condition.get("lastTransitionTime")))
    return Gate(gated)


def gate_condition(is_open: bool, release: str, now: dt.datetime | None = None) -> dict[str, str]:
    """The condition to write: it is only written when it changes, so now is its transition time.
    The reason and message say why a pod is NotReady to whoever runs `kubectl describe pod`."""
    when = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    reason, message = (("Serving", "back in the Service's endpoints") if is_open else
                       ("Draining", f"held out of the Service's endpoints to restart on release {release}"))
    return {"type": c.IN_PLACE_READY, "status": "True" if is_open else "False", "lastTransitionTime": when,
            "reason": reason, "message": message}


def health_url(container: Mapping[str, Any]) -> str | None:
    """The container's HTTP readiness probe as a URL the agent can ask from inside the pod (the
    pod shares one network namespace), or None for no probe, or one that is not httpGet. With
    traffic: drain a pod goes back into the Service once this answers, not merely once Puma's
    processes are back: a worker still loading the app would hold every request routed to it."""
    probe = (container.get("readinessProbe") or {}).get("httpGet")
    if not isinstance(probe, Mapping):
        return None
    port = probe.get("port")
    if isinstance(port, str) and not port.isdigit():
        port = next((p.get("containerPort") for p in container.get("ports") or []
                     if isinstance(p, Mapping) and p.get("name") == port), None)
    if not isinstance(port, (int, str)) or not str(port).isdigit():
        return None
    scheme = "https" if str(probe.get("scheme") or "HTTP").upper() == "HTTPS" else "http"
    path = str(probe.get("path") or "/")
    return f"{scheme}://127.0.0.1:{port}{path if path.startswith('/') else '/' + path}"


def ready_endpoint_pods(endpoint_slices: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Names of the pods that EndpointSlices list as ready (traffic can still be routed to them).
    An endpoint without a ready condition counts as ready, as the API documents."""
    names = set()
    for endpoint_slice in endpoint_slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            ref = endpoint.get("targetRef") or {}
            ready = (endpoint.get("conditions") or {}).get("ready")
            if ref.get("kind") == "Pod" and ref.get("name") and ready is not False:
                names.add(ref["name"])
    return frozenset(names)
