"""Where each opted-in Deployment's rollout stands, as metric series: read from the Deployments
the controller caches, at each scrape.

The rollout record on the Deployment is the truth, so the series are computed from it rather
than kept beside it: one exists exactly while its rollout is under way (or, for a failed one,
until the next release), it is gone when the rollout ends or the Deployment does, there is at
most one per opted-in Deployment, and a controller that just started (or a replica that does
not lead) reports the same as the leader. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from customer_friendly import contract as c
from customer_friendly.contract.objects import Obj, annotations_of, is_opted_in
from customer_friendly.contract.rollout import ABANDONED_PHASES, Rollout


@dataclass(frozen=True)
class RolloutSeries:
    """One Deployment's rollout, as the gauges label it."""

    namespace: str
    deployment: str
    phase: str
    started_at: float | None
    in_progress: bool
    """Not settled: batches to run, a batch in flight, or a rollback under way."""
    failed: bool
    """Settled in Failed or RolledBack: the release asked for is not what the pods serve."""


def rollout_series(deployments: Iterable[Obj]) -> list[RolloutSeries]:
    """The rollouts worth a series, sorted by namespace and name: in progress, or failed.
    A completed rollout, a Deployment without a record and one not opted in give none."""
    found = []
    for deployment in deployments:
        if not is_opted_in(deployment):
            continue
        rollout = Rollout.from_annotation(annotations_of(deployment).get(c.ROLLOUT))
        if rollout is None:
            continue
        failed = rollout.settled and rollout.phase in ABANDONED_PHASES
        if rollout.settled and not failed:
            continue
        meta = deployment.get("metadata") or {}
        found.append(RolloutSeries(meta.get("namespace", ""), meta.get("name", ""), rollout.phase,
                                   rollout.started_at, not rollout.settled, failed))
    return sorted(found, key=lambda s: (s.namespace, s.deployment))
