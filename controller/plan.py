"""The rollout plan: observed state in, the next actions out. Pure, so it is unit-tested alone.

Level-based: nothing here remembers "what just happened". Everything needed to resume after
a crash is in what the plan reads back: the rollout annotation on the Deployment (which
records a batch *before* its agents are asked), the pods' release annotations, and what
the agents of the batch report. An agent whose status already shows the batch's release as
its target is never asked again, so no pod is signalled twice for one release.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from customer_friendly.contract.agent_api import RUNNING_STATES, AgentStatus
from customer_friendly.contract.rollout import COMPLETE, FAILED, PAUSED, PROGRESSING, ROLLED_BACK, Rollout

POLL_SECONDS = 0.25
"""How soon to look at a batch in flight again."""


@dataclass(frozen=True)
class MigrationView:
    """The migration Job of the release being rolled out, as last seen."""

    state: str
    """running, succeeded or failed"""
    message: str = ""


@dataclass(frozen=True)
class PodState:
    name: str
    ready: bool
    """Running with an IP: its agent can be asked. Other pods start from the ConfigMap."""
    serving: str | None
    """The pod's customer-friendly.dev/release annotation."""
    agent: AgentStatus | None = None
    """What its agent said, or None when it could not be asked."""


@dataclass(frozen=True)
class Spec:
    """What the user asked for, resolved from the Deployment's annotations and the policy."""

    release: str
    source: str
    restart: str = "phased"
    replicas: int = 1
    max_unavailable: str = "50%"
    canary: int = 1
    paused: bool = False
    auto_rollback: bool = True
    retry: str | None = None
    batch_deadline_seconds: float = 300.0
    migrate: str | None = None
    """The migration command; None when the Deployment has none."""
    group_block: str | None = None
    """Why this Deployment must wait for others of its app group (web before workers before cron)."""
    group_failure: str | None = None
    """A Deployment of the same app group failed on this release."""


@dataclass
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass
class Actions:
    """What the I/O shell must do, in this order."""

    configmap_release: str | None = None
    mark: dict[str, str] = field(default_factory=dict)
    """pod name -> release it now serves"""
    rollout: Rollout | None = None
    """The new annotation; written before any agent is asked."""
    ask: dict[str, str] = field(default_factory=dict)
    """pod name -> release its agent must go to"""
    run_migration: str | None = None
    """Create the migration Job for this release (the shell finds it again by name)."""
    events: list[Event] = field(default_factory=list)
    requeue_seconds: float | None = None


def batch_size(spec: Spec, first: bool) -> int:
    """The canary for the first batch, then max-unavailable (N, or N% of replicas rounded up)."""
    if first and spec.canary > 0:
        return spec.canary
    text = spec.max_unavailable.strip()
    if text.endswith("%"):
        return max(1, math.ceil(spec.replicas * int(text[:-1]) / 100))
    return max(1, int(text))


def migration_pending(spec: Spec, rollout: Rollout) -> bool:
    """The rollout of a release with a migration waits for it; a first release cannot (its pods
    already start from the Deployment itself), and a rollback never migrates."""
    return bool(spec.migrate) and rollout.release == spec.release and rollout.previous is not None \
        and not rollout.migrated and not rollout.rolling_back


def configmap_target(spec: Spec, rollout: Rollout) -> str | None:
    """The release new pods must start on: never one that failed and was abandoned, nor one
    whose migration has not succeeded yet."""
    abandoned = rollout.release == spec.release and (rollout.rolling_back or rollout.phase in (FAILED, ROLLED_BACK))
    waiting = bool(spec.group_block) and rollout.release == spec.release and rollout.batch_number == 0
    if (abandoned or waiting or migration_pending(spec, rollout)) and rollout.previous:
        return rollout.previous
    return spec.release


def _start(spec: Spec, previous: str | None, now: float) -> Rollout:
    return Rollout(release=spec.release, previous=previous, phase=PROGRESSING, retry=spec.retry, started_at=now,
                   message=f"rolling {spec.release} in place")


def plan(spec: Spec, rollout: Rollout | None, configmap_release: str | None, pods: list[PodState],
         now: float, migration: MigrationView | None = None) -> Actions:
    actions = Actions()
    by_name = {p.name: p for p in pods}

    # A new wanted release (or a retry) starts a rollout, but only between batches.
    fresh = rollout is None or rollout.release != spec.release or (
        rollout.phase in (FAILED, ROLLED_BACK) and spec.retry and spec.retry != rollout.retry)
    if fresh and (rollout is None or not rollout.batch):
        previous = configmap_release if configmap_release != spec.release else (rollout.previous if rollout else None)
        rollout = _start(spec, previous, now)
        origin = f"from {previous}" if previous else "first release"
        actions.events.append(Event("RolloutStarted", f"release {spec.release} ({origin}) started"))
    assert rollout is not None

    # The release ConfigMap always names the release new pods must start on.
    if configmap_release != (target := configmap_target(spec, rollout)):
        actions.configmap_release = target

    # Pods that report what they serve but carry no annotation yet (new, or verified late).
    for pod in pods:
        if pod.ready and pod.agent and pod.agent.state in ("idle", "done") and pod.agent.release \
                and pod.serving != pod.agent.release and pod.name not in rollout.batch:
            actions.mark[pod.name] = pod.agent.release

    def serving(pod: PodState) -> str | None:
        return actions.mark.get(pod.name, pod.serving)

    # 1. A batch in flight: collect results, resume asking after a crash, watch the deadline.
    if rollout.batch:
        remaining, failure = [], None
        for name in rollout.batch:
            pod = by_name.get(name)
            if pod is None:
                continue  # deleted mid-batch: the ReplicaSet replaces it from the ConfigMap
            agent, want = pod.agent, rollout.batch_release
            # idle: the agent started on `want` (a pod born from the ConfigMap, or an agent
            # restarted after its switch) and a request for it is a no-op that leaves it idle.
            if agent and agent.state in ("done", "idle") and agent.release == want:
                actions.mark[name] = want  # type: ignore[assignment]
            elif agent and agent.state == "failed" and agent.target == want:
                failure = (name, agent.error or "the agent reported failure")
            else:
                remaining.append(name)
                if agent and agent.target != want and agent.release != want and agent.state not in RUNNING_STATES:
                    actions.ask[name] = want  # type: ignore[assignment]  # recorded but never asked
        deadline_passed = rollout.batch_started_at is not None and now - rollout.batch_started_at > \
            spec.batch_deadline_seconds
        if failure is None and remaining and deadline_passed:
            failure = (remaining[0], f"did not finish within {spec.batch_deadline_seconds:.0f}s")
        updated = sum(1 for p in pods if serving(p) == rollout.release)
        if failure is not None and not rollout.rolling_back:
            return _fail(spec, rollout, pods, serving, failure, actions, now)
        if remaining and failure is None:
            actions.rollout = replace(rollout, updated=updated, total=len(pods)) if updated != rollout.updated \
                else None
            actions.requeue_seconds = POLL_SECONDS
            return actions
        rollout = replace(rollout, batch=(), batch_release=None, batch_started_at=None, updated=updated,
                          total=len(pods))
        if failure is not None:  # a rollback that itself failed: stop, loudly
            actions.rollout = replace(rollout, phase=FAILED, rolling_back=False,
                                      message=f"rollback failed on pod {failure[0]}: {failure[1]}")
            actions.events.append(Event("RollbackFailed", actions.rollout.message, warning=True))
            return actions
        actions.events.append(Event("BatchDone", f"batch {rollout.batch_number} on {rollout.wanted} done"))
        if rollout.release != spec.release and not rollout.rolling_back:
            # Superseded while the batch ran: the next reconcile starts the newest release.
            actions.rollout = rollout
            actions.requeue_seconds = 0.0
            return actions

    # 2. Between batches. An app group fails together and goes in order; a release with a
    # migration first waits for its Job.
    live = rollout.phase not in (FAILED, ROLLED_BACK) and not rollout.rolling_back and rollout.release == spec.release
    if live and spec.group_failure:
        moved = any(serving(p) == rollout.release for p in pods)
        if moved:
            return _fail(spec, rollout, pods, serving, ("", f"app group: {spec.group_failure}"), actions, now)
        reason = f"app group: {spec.group_failure}"
        actions.rollout = replace(rollout, phase=FAILED, reason=reason, message=f"{reason}; not started")
        actions.events.append(Event("RolloutFailed", actions.rollout.message, warning=True))
        return actions
    if live and spec.group_block and rollout.batch_number == 0:
        message = f"waiting for {spec.group_block}"
        actions.rollout = replace(rollout, message=message) if rollout.message != message else None
        actions.requeue_seconds = 1.0
        return actions
    if rollout.phase not in (FAILED, ROLLED_BACK) and migration_pending(spec, rollout):
        return _migrate(spec, rollout, migration, actions)
    if rollout.rolling_back:
        back = [p for p in pods if p.ready and serving(p) != rollout.previous]
        if not back:
            actions.rollout = replace(rollout, phase=ROLLED_BACK, rolling_back=False,
                                      message=f"rolled back to {rollout.previous} after "
                                      + (f"pod {rollout.failed_pod} failed: " if rollout.failed_pod else "")
                                      + str(rollout.reason))
            actions.events.append(Event("RolledBack", actions.rollout.message, warning=True))
            return actions
        return _ask_batch(rollout, back, len(back), rollout.previous, actions, now)  # type: ignore[arg-type]
    if rollout.phase in (FAILED, ROLLED_BACK):
        actions.rollout = rollout if actions.mark else None
        return actions
    pending = sorted((p for p in pods if p.ready and serving(p) != spec.release), key=lambda p: p.name)
    updated = sum(1 for p in pods if serving(p) == spec.release)
    if not pending:
        waiting = [p.name for p in pods if not p.ready]
        message = f"all {updated} running pods serve {spec.release}" + (
            f"; {len(waiting)} not running yet start on it from the ConfigMap" if waiting else "")
        done = replace(rollout, phase=COMPLETE, updated=updated, total=len(pods), message=message)
        if rollout.phase != COMPLETE:
            actions.events.append(Event("RolloutComplete", message))
        actions.rollout = done if done != rollout else None
        return actions
    if spec.paused:
        paused = replace(rollout, phase=PAUSED, updated=updated, total=len(pods),
                         message=f"paused after {updated} of {len(pods)} pods")
        actions.rollout = paused if paused != rollout else None
        return actions
    first = updated == 0 and rollout.batch_number == 0
    rollout = replace(rollout, phase=PROGRESSING, updated=updated, total=len(pods))
    return _ask_batch(rollout, pending, batch_size(spec, first), spec.release, actions, now)


def _migrate(spec: Spec, rollout: Rollout, migration: MigrationView | None, actions: Actions) -> Actions:
    if migration is None:
        actions.run_migration = spec.release
        actions.rollout = replace(rollout, message=f"migrating: {spec.migrate}")
        actions.events.append(Event("MigrationStarted", f"running `{spec.migrate}` on {spec.release} as a Job"))
        actions.requeue_seconds = 1.0
    elif migration.state == "succeeded":
        actions.rollout = replace(rollout, migrated=True, message="migration succeeded")
        actions.events.append(Event("MigrationSucceeded", f"`{spec.migrate}` succeeded on {spec.release}"))
        actions.requeue_seconds = 0.0
    elif migration.state == "failed":
        reason = f"migration failed: {migration.message}"
        actions.rollout = replace(rollout, phase=FAILED, reason=reason, message=f"{reason}; no pod was touched")
        actions.events.append(Event("MigrationFailed", f"release {spec.release}: {reason}", warning=True))
        if rollout.previous:
            actions.configmap_release = rollout.previous
    else:
        actions.requeue_seconds = 1.0
    return actions


def _ask_batch(rollout: Rollout, pending: list[PodState], size: int, release: str, actions: Actions,
               now: float) -> Actions:
    batch = tuple(p.name for p in pending[:size])
    number = rollout.batch_number + 1
    message = (f"rolling back {len(batch)} pods to {release}" if rollout.rolling_back
               else f"batch {number}: {len(batch)} pods to {release} ({rollout.updated} of {rollout.total} done)")
    actions.rollout = replace(rollout, batch=batch, batch_release=release, batch_started_at=now, batch_number=number,
                              message=message)
    actions.ask = dict.fromkeys(batch, release)
    actions.events.append(Event("BatchStarted", f"{message}: {', '.join(batch)}"))
    actions.requeue_seconds = POLL_SECONDS
    return actions


def _fail(spec: Spec, rollout: Rollout, pods: list[PodState], serving: Any, failure: tuple[str, str],
          actions: Actions, now: float) -> Actions:
    pod, reason = failure
    message = f"pod {pod}: {reason}" if pod else reason
    actions.events.append(Event("RolloutFailed", f"release {rollout.release} failed: {message}", warning=True))
    failed = replace(rollout, phase=FAILED, failed_pod=pod or None, reason=reason, batch=(), batch_release=None,
                     batch_started_at=None, message=message)
    if rollout.previous is not None:
        actions.configmap_release = rollout.previous
    if not spec.auto_rollback or rollout.previous is None:
        actions.rollout = failed
        return actions
    # Every pod that moved, and those of the failed batch (their `current` may have moved too).
    back = [p for p in pods if p.ready and (serving(p) != rollout.previous or p.name in rollout.batch)]
    for name in rollout.batch:
        actions.mark.pop(name, None)
    actions.events.append(Event("RollingBack", f"rolling {len(back)} pods back to {rollout.previous}",
                                warning=True))
    failed = replace(failed, rolling_back=True)
    return _ask_batch(failed, back, len(back), rollout.previous, actions, now)
