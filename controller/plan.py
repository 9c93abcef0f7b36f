"""The rollout plan: observed state in, the next actions out. Pure, so it is unit-tested alone.

Level-based: nothing here remembers "what just happened". Everything needed to resume after
a crash is in what the plan reads back: the rollout annotation on the Deployment (which
records a batch *before* its agents are asked), the pods' release annotations, and what
the agents of the batch report. An agent whose status already shows the batch's release as
its target is never asked again, so no pod is signalled twice for one release.

`plan()` only dispatches; each regime the observed state can be in is its own function:
starting a rollout (`_start_if_wanted`, `_configmap_change`), marking pods that report what they
serve (`_reported_releases`), a batch in flight (`_collect_batch`), and between batches
(`_between_batches`, which picks among the app group, the migration, a rollback, a stopped
rollout, completion, a pause and the next batch). A regime does no I/O: it reads its arguments
and writes only into the `Actions` it is handed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from customer_friendly.contract.agent_api import DONE, IDLE, RUNNING_STATES, AgentStatus
from customer_friendly.contract.agent_api import FAILED as AGENT_FAILED
from customer_friendly.contract.rollout import (
    ABANDONED_PHASES,
    COMPLETE,
    FAILED,
    PAUSED,
    PROGRESSING,
    ROLLED_BACK,
    Rollout,
)

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
    gated: bool = False
    """It has the in-place-ready readiness gate (traffic: drain): the controller can take it out of the endpoints."""
    gate_open: bool | None = None
    """The gate's condition: True (in the endpoints when healthy), False (held out), None (never set)."""
    gate_closed_at: float | None = None
    """When the condition last became False."""
    in_endpoints: bool = False
    """Listed as ready in one of the namespace's EndpointSlices: traffic can still reach it."""


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
    drain: bool = False
    """traffic: drain: a pod leaves the Service's endpoints, and settles, before its agent is asked."""
    settle_seconds: float = 5.0


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
    gates: dict[str, bool] = field(default_factory=dict)
    """pod name -> the in-place-ready condition to set (False: out of the endpoints; True: back in)"""
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


Failure = tuple[str, str]
"""(pod name, or "" when no pod is to blame; why the rollout failed)"""


def _serving(pod: PodState, mark: dict[str, str]) -> str | None:
    """What a pod serves as far as this plan knows: a mark made in this same pass counts, so a
    pod verified a moment ago is neither asked again nor counted as pending."""
    return mark.get(pod.name, pod.serving)


# --- Regime 1: starting a rollout, and the release ConfigMap ---------------------------------


def _wants_restart(spec: Spec, rollout: Rollout) -> bool:
    """A rollout record is replaced by a fresh one for a new wanted release, or for a new retry
    token on a release that failed: a failed release is otherwise never tried again by itself."""
    return rollout.release != spec.release or (
        rollout.phase in ABANDONED_PHASES and bool(spec.retry) and spec.retry != rollout.retry)


def _start(spec: Spec, previous: str | None, now: float) -> Rollout:
    return Rollout(release=spec.release, previous=previous, phase=PROGRESSING, retry=spec.retry, started_at=now,
                   message=f"rolling {spec.release} in place")


def _start_if_wanted(spec: Spec, rollout: Rollout | None, configmap_release: str | None, actions: Actions,
                     now: float) -> Rollout:
    """The rollout to plan from: a fresh one when a new release (or a retry) is wanted, else the
    one read back. Never while a batch is in flight: its agents were asked and must be collected
    (and marked, or rolled back) first, or a pod would be left moved but unaccounted for.

    The release to fall back to is the one the ConfigMap names (what pods start on now), unless
    it already names the wanted release (a retry), when the old record's previous one still holds."""
    if rollout is not None and (rollout.batch or not _wants_restart(spec, rollout)):
        return rollout
    previous = configmap_release if configmap_release != spec.release else (rollout.previous if rollout else None)
    origin = f"from {previous}" if previous else "first release"
    actions.events.append(Event("RolloutStarted", f"release {spec.release} ({origin}) started"))
    return _start(spec, previous, now)


def _configmap_change(spec: Spec, rollout: Rollout, configmap_release: str | None) -> str | None:
    """The release to write to the ConfigMap, or None when it already names the right one: pods
    the ReplicaSet creates start from it, whatever else this pass decides, so it is kept level on
    every pass rather than moved at chosen moments."""
    target = configmap_target(spec, rollout)
    return target if configmap_release != target else None


# --- Regime 2: pods that report what they serve ----------------------------------------------


def _reported_release(pod: PodState) -> str | None:
    """The release a running pod's agent says it serves, when the pod's annotation does not say so yet."""
    agent = pod.agent
    if pod.ready and agent and agent.state in (IDLE, DONE) and agent.release and pod.serving != agent.release:
        return agent.release
    return None


def _reported_releases(rollout: Rollout, pods: list[PodState]) -> dict[str, str]:
    """Marks (pod -> release) for pods whose agents report a release their annotation lacks: pods
    born from the ConfigMap, or verified late. The pods of a batch in flight are left to the batch,
    which knows whether what they report is the outcome it waits for."""
    return {pod.name: release for pod in pods
            if pod.name not in rollout.batch and (release := _reported_release(pod))}


def _gates_to_open(rollout: Rollout, pods: list[PodState]) -> dict[str, bool]:
    """Every running pod with the in-place-ready gate serves unless a batch in flight holds it
    out: a new pod's condition is set for the first time, and one left closed (by a batch that
    failed or was cut short) opens again. Level-based, so a crash never strands a pod outside."""
    return {pod.name: True for pod in pods
            if pod.ready and _held_out(pod) and pod.name not in rollout.batch}


def _held_out(pod: PodState) -> bool:
    return pod.gated and pod.gate_open is not True


def _drain_then_ask(spec: Spec, pods: list[PodState], release: str, actions: Actions, now: float) -> None:
    """Asks each pod's agent for `release`, the traffic: drain way when the Deployment wants it:
    first the gate closes (the kubelet turns the pod NotReady and the EndpointSlices drop it),
    then the pod settles for settle-seconds out of every EndpointSlice (kube-proxy everywhere,
    and a load balancer, stop sending), and only then is its agent asked. The pod still serves
    what reaches it meanwhile, so a stale endpoint drops nothing. A pod without the gate (its
    template predates traffic: drain) cannot be held out and is asked at once."""
    for pod in pods:
        if not (spec.drain and pod.gated):
            actions.ask[pod.name] = release
        elif pod.gate_open is not False:
            actions.gates[pod.name] = False
        elif not (pod.in_endpoints or pod.gate_closed_at is None or now - pod.gate_closed_at < spec.settle_seconds):
            actions.ask[pod.name] = release


# --- Regime 3: a batch in flight -------------------------------------------------------------


@dataclass(frozen=True)
class BatchView:
    """What the agents of a batch in flight report, pod by pod (pods deleted mid-batch are left
    out: the ReplicaSet replaces them from the ConfigMap)."""

    done: tuple[str, ...] = ()
    """Serving the batch's release: asked and done, or idle on it (born on it, or restarted after the switch)."""
    remaining: tuple[str, ...] = ()
    """Not there yet."""
    unasked: tuple[str, ...] = ()
    """Of the remaining, those whose agent was never asked (the controller died between recording and asking)."""
    failure: Failure | None = None
    """The last pod whose agent reports it failed to go to the batch's release."""


def _batch_release(rollout: Rollout) -> str:
    """The release a batch in flight moves its pods to. `_ask_batch` always records it; a record
    without one (edited by hand, or damaged) is read as the release the rollout moves pods to,
    rather than asking agents for no release at all."""
    return rollout.batch_release if rollout.batch_release is not None else rollout.wanted


def _read_batch(rollout: Rollout, want: str, pods: list[PodState]) -> BatchView:
    """Sorts the batch's pods by what their agents report. An agent idle on `want` counts as done:
    a pod born on it, or an agent restarted after its switch, has nothing left to do, and asking
    it again is a no-op that leaves it idle. A pod is asked (again) only when its agent neither
    targets nor serves `want` and is not busy, so no pod is signalled twice for one release."""
    by_name = {p.name: p for p in pods}
    done: list[str] = []
    remaining: list[str] = []
    unasked: list[str] = []
    failure: Failure | None = None
    for name in rollout.batch:
        pod = by_name.get(name)
        if pod is None:
            continue
        agent = pod.agent
        if agent and agent.state in (DONE, IDLE) and agent.release == want:
            done.append(name)
        elif agent and agent.state == AGENT_FAILED and agent.target == want:
            failure = (name, agent.error or "the agent reported failure")
        else:
            remaining.append(name)
            if agent and agent.target != want and agent.release != want and agent.state not in RUNNING_STATES:
                unasked.append(name)
    return BatchView(tuple(done), tuple(remaining), tuple(unasked), failure)


def _deadline_failure(spec: Spec, rollout: Rollout, remaining: tuple[str, ...], now: float) -> Failure | None:
    """A batch that has not finished within its deadline fails on its first unfinished pod: an
    agent that stopped answering would otherwise hold the rollout forever."""
    started = rollout.batch_started_at
    passed = started is not None and now - started > spec.batch_deadline_seconds
    if not (remaining and passed):
        return None
    return (remaining[0], f"did not finish within {spec.batch_deadline_seconds:.0f}s")


def _rollback_failed(collected: Rollout, failure: Failure, actions: Actions) -> Actions:
    """A rollback whose own batch failed stops, loudly, and for good (rolling_back False): retrying
    it could only fail the same way, and the pods are left for a person to look at."""
    actions.rollout = replace(collected, phase=FAILED, rolling_back=False,
                              message=f"rollback failed on pod {failure[0]}: {failure[1]}")
    actions.ask.clear()  # nothing more is moved once the record says the rollback stopped
    actions.events.append(Event("RollbackFailed", actions.rollout.message, warning=True))
    return actions


def _collect_batch(spec: Spec, rollout: Rollout, pods: list[PodState], actions: Actions, now: float) -> Rollout | None:
    """A batch in flight: marks its pods that are done, asks those recorded but never asked
    (a crash between the annotation and the ask), and watches the deadline. Returns the rollout
    with the batch collected when the plan goes on between batches, or None when this pass ends
    here: the batch still runs, it failed (`_fail` rolls back what moved; a failed rollback
    stops), or a newer release superseded it (the next pass starts that one from a clean record)."""
    want = _batch_release(rollout)
    view = _read_batch(rollout, want, pods)
    actions.mark.update(dict.fromkeys(view.done, want))
    by_name = {p.name: p for p in pods}
    _drain_then_ask(spec, [by_name[name] for name in view.unasked], want, actions, now)
    actions.gates.update({name: True for name in view.done if _held_out(by_name[name])})
    failure = view.failure or _deadline_failure(spec, rollout, view.remaining, now)
    updated = sum(1 for p in pods if _serving(p, actions.mark) == rollout.release)
    if failure is not None and not rollout.rolling_back:
        _fail(spec, rollout, pods, failure, actions, now)
        return None
    if view.remaining and failure is None:
        actions.rollout = replace(rollout, updated=updated, total=len(pods)) if updated != rollout.updated else None
        actions.requeue_seconds = POLL_SECONDS
        return None
    collected = replace(rollout, batch=(), batch_release=None, batch_started_at=None, updated=updated,
                        total=len(pods))
    if failure is not None:
        _rollback_failed(collected, failure, actions)
        return None
    actions.events.append(Event("BatchDone", f"batch {collected.batch_number} on {collected.wanted} done"))
    if collected.release != spec.release and not collected.rolling_back:
        actions.rollout = collected
        actions.requeue_seconds = 0.0
        return None
    return collected


# --- Regime 4: between batches ---------------------------------------------------------------


def _group_failed(spec: Spec, rollout: Rollout, pods: list[PodState], group_failure: str, actions: Actions,
                  now: float) -> Actions:
    """An app group fails together: when another Deployment of the group failed on this release,
    this one rolls back what moved, or, when nothing moved yet, fails without touching a pod."""
    reason = f"app group: {group_failure}"
    if any(_serving(p, actions.mark) == rollout.release for p in pods):
        return _fail(spec, rollout, pods, ("", reason), actions, now)
    actions.rollout = replace(rollout, phase=FAILED, reason=reason, message=f"{reason}; not started")
    actions.events.append(Event("RolloutFailed", actions.rollout.message, warning=True))
    return actions


def _wait_for_group(rollout: Rollout, group_block: str, actions: Actions) -> Actions:
    """An app group goes in order (web before workers before cron): a later role does not start
    until the earlier ones are done, and says what it waits for. The record is rewritten only
    when that changes; the group's peers wake this one, the requeue is the backstop."""
    message = f"waiting for {group_block}"
    actions.rollout = replace(rollout, message=message) if rollout.message != message else None
    actions.requeue_seconds = 1.0
    return actions


def _migrate(spec: Spec, rollout: Rollout, migration: MigrationView | None, actions: Actions) -> Actions:
    """A release with a migration moves no pod until its Job succeeded: the new code may need the
    new schema. Starts the Job, waits for it, and fails the release (no pod touched) when it fails."""
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


def _roll_back(spec: Spec, rollout: Rollout, pods: list[PodState], actions: Actions, now: float) -> Actions:
    """After a failure, every running pod not on the previous release is asked back to it, in one
    batch, until none is left; then the rollout ends RolledBack. A record that is rolling back
    with no previous release (`_fail` never writes one) has nowhere to go: it stops Failed."""
    previous = rollout.previous
    if previous is None:
        actions.rollout = replace(rollout, phase=FAILED, rolling_back=False,
                                  message=f"no previous release to roll back to: {rollout.reason}")
        actions.events.append(Event("RollbackFailed", actions.rollout.message, warning=True))
        return actions
    back = [p for p in pods if p.ready and _serving(p, actions.mark) != previous]
    if not back:
        actions.rollout = replace(rollout, phase=ROLLED_BACK, rolling_back=False,
                                  message=f"rolled back to {previous} after "
                                  + (f"pod {rollout.failed_pod} failed: " if rollout.failed_pod else "")
                                  + str(rollout.reason))
        actions.events.append(Event("RolledBack", actions.rollout.message, warning=True))
        return actions
    return _ask_batch(spec, rollout, back, len(back), previous, actions, now)


def _stay_stopped(rollout: Rollout, actions: Actions) -> Actions:
    """A Failed or RolledBack rollout stays so: a release known to fail is not tried again until
    a new release or a retry is asked for (`_start_if_wanted`). The record is written back only
    along with pods marked in this pass."""
    actions.rollout = rollout if actions.mark else None
    return actions


def _complete(spec: Spec, rollout: Rollout, pods: list[PodState], updated: int, actions: Actions) -> Actions:
    """Every running pod serves the release: the rollout is Complete. Pods not running yet start
    on it from the ConfigMap, so they are counted, not waited for. The record is rewritten only
    when it changes, and the event only when the rollout becomes Complete."""
    waiting = [p.name for p in pods if not p.ready]
    message = f"all {updated} running pods serve {spec.release}" + (
        f"; {len(waiting)} not running yet start on it from the ConfigMap" if waiting else "")
    done = replace(rollout, phase=COMPLETE, updated=updated, total=len(pods), message=message)
    if rollout.phase != COMPLETE:
        actions.events.append(Event("RolloutComplete", message))
    actions.rollout = done if done != rollout else None
    return actions


def _pause(rollout: Rollout, pods: list[PodState], updated: int, actions: Actions) -> Actions:
    """A paused rollout starts no batch (one in flight is collected first) and says how far it got;
    the record is rewritten only when that changes."""
    paused = replace(rollout, phase=PAUSED, updated=updated, total=len(pods),
                     message=f"paused after {updated} of {len(pods)} pods")
    actions.rollout = paused if paused != rollout else None
    return actions


def _unverified(pod: PodState, mark: dict[str, str]) -> bool:
    """A running pod that does not say yet what it serves: no annotation, and its agent did not
    answer (still starting) or is busy. It may well serve the release already (born on it from
    the Deployment or the ConfigMap), so it is not asked until it says; asking would restart
    Puma for nothing."""
    agent = pod.agent
    return _serving(pod, mark) is None and (agent is None or agent.release is None or agent.state in RUNNING_STATES)


def _verification_overdue(spec: Spec, rollout: Rollout, now: float) -> bool:
    """Waiting for silent agents ends after a batch deadline from the rollout's start: they are
    then asked like any pending pod, and an agent that never answers fails its batch loudly
    instead of holding the rollout forever."""
    return rollout.started_at is not None and now - rollout.started_at > spec.batch_deadline_seconds


def _wait_for_agents(rollout: Rollout, unverified: int, actions: Actions) -> Actions:
    """Only pods whose agents have not said what they serve are left: look again soon."""
    message = f"waiting for the agents of {unverified} pods to say what they serve"
    actions.rollout = replace(rollout, message=message) if rollout.message != message else None
    actions.requeue_seconds = 1.0
    return actions


def _next_batch(spec: Spec, rollout: Rollout, pending: list[PodState], pods: list[PodState], updated: int,
                actions: Actions, now: float) -> Actions:
    """The next batch of pending pods: the canary while no pod has moved, then max-unavailable."""
    first = updated == 0 and rollout.batch_number == 0
    progressing = replace(rollout, phase=PROGRESSING, updated=updated, total=len(pods))
    return _ask_batch(spec, progressing, pending, batch_size(spec, first), spec.release, actions, now)


def _between_batches(spec: Spec, rollout: Rollout, pods: list[PodState], migration: MigrationView | None,
                     actions: Actions, now: float) -> Actions:
    """No batch in flight: picks what happens next, in this order of precedence. An app group
    fails together, then goes in order; a release with a migration waits for it; a rollback goes
    on until done; a stopped rollout stays stopped; otherwise the rollout completes, stays
    paused, or starts its next batch."""
    live = rollout.phase not in ABANDONED_PHASES and not rollout.rolling_back and rollout.release == spec.release
    if live and spec.group_failure:
        return _group_failed(spec, rollout, pods, spec.group_failure, actions, now)
    if live and spec.group_block and rollout.batch_number == 0:
        return _wait_for_group(rollout, spec.group_block, actions)
    if rollout.phase not in ABANDONED_PHASES and migration_pending(spec, rollout):
        return _migrate(spec, rollout, migration, actions)
    if rollout.rolling_back:
        return _roll_back(spec, rollout, pods, actions, now)
    if rollout.phase in ABANDONED_PHASES:
        return _stay_stopped(rollout, actions)
    pending = sorted((p for p in pods if p.ready and _serving(p, actions.mark) != spec.release), key=lambda p: p.name)
    updated = sum(1 for p in pods if _serving(p, actions.mark) == spec.release)
    if not pending:
        return _complete(spec, rollout, pods, updated, actions)
    if spec.paused:
        return _pause(rollout, pods, updated, actions)
    known = [p for p in pending if not _unverified(p, actions.mark)]
    if len(known) < len(pending) and not _verification_overdue(spec, rollout, now):
        if not known:
            return _wait_for_agents(rollout, len(pending), actions)
        pending = known
    return _next_batch(spec, rollout, pending, pods, updated, actions, now)


# --- The dispatch ----------------------------------------------------------------------------


def plan(spec: Spec, rollout: Rollout | None, configmap_release: str | None, pods: list[PodState],
         now: float, migration: MigrationView | None = None) -> Actions:
    """The actions for one reconcile. Only dispatches: the rollout to plan from, the ConfigMap,
    the pods to mark, then either the batch in flight or what comes between batches (a batch
    just collected goes straight on to that)."""
    actions = Actions()
    rollout = _start_if_wanted(spec, rollout, configmap_release, actions, now)
    actions.configmap_release = _configmap_change(spec, rollout, configmap_release)
    actions.mark = _reported_releases(rollout, pods)
    actions.gates = _gates_to_open(rollout, pods)
    if rollout.batch:
        collected = _collect_batch(spec, rollout, pods, actions, now)
        if collected is None:
            return actions
        rollout = collected
    return _between_batches(spec, rollout, pods, migration, actions, now)


# --- Shared by the regimes -------------------------------------------------------------------


def _ask_batch(spec: Spec, rollout: Rollout, pending: list[PodState], size: int, release: str, actions: Actions,
               now: float) -> Actions:
    """Records the batch (written before any pod is touched, so a crash resumes it) and asks its
    agents (after draining them, with traffic: drain): the first `size` pending pods, to `release`."""
    batch = tuple(p.name for p in pending[:size])
    number = rollout.batch_number + 1
    message = (f"rolling back {len(batch)} pods to {release}" if rollout.rolling_back
               else f"batch {number}: {len(batch)} pods to {release} ({rollout.updated} of {rollout.total} done)")
    actions.rollout = replace(rollout, batch=batch, batch_release=release, batch_started_at=now, batch_number=number,
                              message=message)
    actions.ask.clear()
    for name in batch:  # a pod of the batch is held out, or let back in, by the batch alone
        actions.gates.pop(name, None)
    _drain_then_ask(spec, pending[:size], release, actions, now)
    actions.events.append(Event("BatchStarted", f"{message}: {', '.join(batch)}"))
    actions.requeue_seconds = POLL_SECONDS
    return actions


def _fail(spec: Spec, rollout: Rollout, pods: list[PodState], failure: Failure, actions: Actions,
          now: float) -> Actions:
    """The release failed: new pods go back to starting on the previous release, and, with
    auto-rollback and a previous release to go to, every pod that moved is asked back at once."""
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
    back = [p for p in pods if p.ready and (_serving(p, actions.mark) != rollout.previous or p.name in rollout.batch)]
    for name in rollout.batch:
        actions.mark.pop(name, None)
    actions.events.append(Event("RollingBack", f"rolling {len(back)} pods back to {rollout.previous}",
                                warning=True))
    failed = replace(failed, rolling_back=True)
    return _ask_batch(spec, failed, back, len(back), rollout.previous, actions, now)
