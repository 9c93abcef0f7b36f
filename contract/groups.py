"""App groups: Deployments sharing `customer-friendly.dev/app` release together, web first, then
workers, then cron. The order and the membership rule live here once; the controller gates
each Deployment's rollout on them and `kubectl cfo --app` lists and waits on the same group. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from customer_friendly.contract import APP, RELEASE, RESTART, ROLE, ROLES, ROLLOUT
from customer_friendly.contract.objects import annotations_of, is_opted_in, name_of
from customer_friendly.contract.rollout import ABANDONED_PHASES, COMPLETE, Rollout

ROLE_ORDER = {role: index for index, role in enumerate(ROLES)}
D = TypeVar("D", bound=Mapping[str, Any])


def role_of(annotations: Mapping[str, str]) -> str:
    """A Deployment's place in its app group's order: its role annotation, else web for phased and
    hot restarts (a server) and worker for the others."""
    explicit = annotations.get(ROLE)
    if explicit in ROLES:
        return explicit
    return "web" if annotations.get(RESTART, "phased") in ("phased", "hot") else "worker"


def members(deployments: Iterable[D], app: str) -> list[D]:
    """The opted-in Deployments of `app`, in the group's order (role, then name)."""
    group = [d for d in deployments if is_opted_in(d) and annotations_of(d).get(APP) == app]
    return sorted(group, key=lambda d: (ROLE_ORDER[role_of(annotations_of(d))], name_of(d)))


@dataclass(frozen=True)
class GroupGate:
    """What an app group says about one member's rollout of its wanted release."""

    waiting_for: str | None = None
    """Why it must wait (members earlier in the order that have not completed the release)."""
    failed: str | None = None
    """A member that failed or rolled back on the same release."""


def gate(me: Mapping[str, Any], peers: Iterable[Mapping[str, Any]]) -> GroupGate:
    """The gate on Deployment `me` from the other members of its app group (`peers` may hold any
    Deployments of the namespace, `me` included)."""
    mine = annotations_of(me)
    app, release = mine.get(APP), mine.get(RELEASE)
    if not app:
        return GroupGate()
    my_order = ROLE_ORDER[role_of(mine)]
    waiting, failed = [], None
    for peer in members(peers, app):
        if name_of(peer) == name_of(me):
            continue
        theirs = annotations_of(peer)
        rollout = Rollout.from_annotation(theirs.get(ROLLOUT))
        on_release = rollout if rollout is not None and rollout.release == release else None
        if on_release is not None and on_release.phase in ABANDONED_PHASES:
            failed = f"{name_of(peer)} failed: {on_release.reason or on_release.message}"
        done = on_release is not None and on_release.phase == COMPLETE and not on_release.batch
        if ROLE_ORDER[role_of(theirs)] < my_order and not done:
            waiting.append(name_of(peer))
    block = f"{', '.join(sorted(waiting))} (app {app}) to complete {release}" if waiting else None
    return GroupGate(block, failed)
