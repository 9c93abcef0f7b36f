"""What `kubectl cfo` shows, computed from API objects. Pure: objects in, rows and text out."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from customer_friendly import contract as c
from customer_friendly.contract.groups import role_of
from customer_friendly.contract.objects import Obj, annotations_of
from customer_friendly.contract.readiness import read_gate
from customer_friendly.contract.rollout import Rollout


def rollout_of(deployment: Mapping[str, Any]) -> Rollout | None:
    return Rollout.from_annotation(annotations_of(deployment).get(c.ROLLOUT))


def pod_rows(pods: list[Obj]) -> list[Obj]:
    rows = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        status = pod.get("status") or {}
        ready = any(cond.get("type") == "Ready" and cond.get("status") == "True"
                    for cond in status.get("conditions") or [])
        rows.append({"pod": pod["metadata"]["name"], "ip": status.get("podIP") or "",
                     "phase": status.get("phase") or "", "ready": ready,
                     "release": annotations_of(pod).get(c.RELEASE) or "", "traffic": _traffic(pod)})
    return rows


def _traffic(pod: Obj) -> str:
    """traffic: drain shows where a pod is: held out of the Service to restart, or back in."""
    gate = read_gate(pod)
    if not gate.gated:
        return ""
    if gate.open is None:
        return "not yet in"
    return "in" if gate.open else "held out"


def status_document(deployment: Obj, pods: list[Obj]) -> Obj:
    meta = deployment["metadata"]
    return {"namespace": meta["namespace"], "deployment": meta["name"],
            "wanted": annotations_of(deployment).get(c.RELEASE), "rollout": _wire(rollout_of(deployment)),
            "pods": pod_rows(pods)}


def fleet_rows(deployments: list[Obj], pods_by_deployment: dict[tuple[str, str], list[Obj]]) -> list[Obj]:
    rows = []
    for deployment in sorted(deployments, key=lambda d: (d["metadata"]["namespace"], d["metadata"]["name"])):
        meta = deployment["metadata"]
        pods = pods_by_deployment.get((meta["namespace"], meta["name"]), [])
        running = Counter(annotations_of(p).get(c.RELEASE) or "unknown" for p in pods)
        rollout = rollout_of(deployment)
        rows.append({"namespace": meta["namespace"], "deployment": meta["name"],
                     "wanted": annotations_of(deployment).get(c.RELEASE) or "",
                     "phase": rollout.phase if rollout else "",
                     "pods": len(pods), "running": dict(sorted(running.items()))})
    return rows


def group_rows(members: list[Obj], pods_by_deployment: dict[tuple[str, str], list[Obj]]) -> list[Obj]:
    """An app group's rows with each Deployment's role, in the order given (the group's order:
    web, worker, cron); fleet_rows sorts by name, so rows are matched to members by name."""
    by_name = {(r["namespace"], r["deployment"]): r for r in fleet_rows(members, pods_by_deployment)}
    return [{**by_name[(d["metadata"]["namespace"], d["metadata"]["name"])], "role": role_of(annotations_of(d))}
            for d in members]


def history_rows(deployment: Obj, events: list[Obj]) -> list[Obj]:
    ours = [e for e in events if (e.get("source") or {}).get("component") == "customer-friendly-controller"
            or e.get("reportingComponent") == "customer-friendly.dev/controller"]
    # Timestamps have whole seconds; resourceVersion breaks ties in creation order.
    ours.sort(key=lambda e: (e.get("firstTimestamp") or e.get("eventTime") or "",
                             int((e.get("metadata") or {}).get("resourceVersion") or 0)))
    return [{"time": e.get("firstTimestamp") or e.get("eventTime") or "", "type": e.get("type", ""),
             "reason": e.get("reason", ""), "message": e.get("message", "")} for e in ours]


def table(rows: list[Obj], columns: list[tuple[str, str]]) -> str:
    """kubectl-style columns: upper-case headers, left-aligned, three spaces apart."""
    def cell(row: Obj, key: str) -> str:
        value = row.get(key, "")
        if isinstance(value, dict):
            return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value) if value not in (None, "") else "-"

    cells = [[header for header, _ in columns]] + [[cell(r, key) for _, key in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("   ".join(value.ljust(widths[i]) for i, value in enumerate(line)).rstrip() for line in cells)


def _wire(rollout: Rollout | None) -> Obj:
    """The rollout as `-o json|yaml` shows it: the annotation's own JSON form."""
    return rollout.to_wire() if rollout else {}


def progress_line(rollout: Rollout, elapsed: float, width: int = 24) -> str:
    filled = int(width * rollout.updated / rollout.total) if rollout.total else 0
    bar = "#" * filled + "-" * (width - filled)
    batch = f" ({len(rollout.batch)} pods)" if rollout.batch else ""
    return (f"[{bar}] {rollout.updated}/{rollout.total} pods on {rollout.release}  {rollout.phase}"
            f"  batch {rollout.batch_number}{batch}  {elapsed:.0f}s")


def release_rows(published: list[tuple[str, int, float, str | None]], wanted: str | None,
                 previous: str | None, pods: list[Obj], shown_pods: int = 3) -> list[Obj]:
    """What is published for a Deployment's source, oldest first: each release with its size, time
    and checksum, and the pods that serve it. `published` holds (release, bytes, seconds since the
    epoch, sha256 or None). A release a pod serves that is not published shows too."""
    serving: dict[str, list[str]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        release = annotations_of(pod).get(c.RELEASE)
        if release:
            serving.setdefault(release, []).append(pod["metadata"]["name"])
    known = {release for release, *_ in published}
    rows = [_release_row(release, size, modified, sha256, serving.get(release, []), shown_pods)
            for release, size, modified, sha256 in sorted(published, key=lambda p: (p[2], p[0]))]
    rows += [_release_row(release, None, None, None, serving[release], shown_pods)
             for release in sorted(set(serving) - known)]
    for row in rows:
        notes = [note for note, match in (("wanted", wanted), ("previous", previous)) if match == row["release"]]
        row["note"] = ", ".join(notes + ([] if row["release"] in known else ["not published"]))
    return rows


def _release_row(release: str, size: int | None, modified: float | None, sha256: str | None,
                 pods: list[str], shown: int) -> Obj:
    names = ", ".join(pods[:shown]) + (f" (+{len(pods) - shown})" if len(pods) > shown else "")
    published = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(modified)) if modified is not None else "")
    return {"release": release, "published": published, "size": size, "sha256": (sha256 or "")[:12],
            "pods": len(pods), "serving": names}


def upload_bar(sent: int, total: int, width: int = 24) -> str:
    """One line of upload progress: bar, percent, MiB sent of total."""
    share = sent / total if total else 1.0
    filled = int(width * share)
    return f"[{'#' * filled}{'-' * (width - filled)}] {share:4.0%}  {sent / 2**20:.1f}/{total / 2**20:.1f} MiB"
