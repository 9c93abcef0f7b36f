"""Each regime of the rollout plan on its own: plain data in, Actions out (no I/O, no mocks).

test_plan.py drives `plan()` to a fixpoint; these call the regime functions directly, so a
failure names the regime that broke.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from customer_friendly.contract.agent_api import AgentStatus
from customer_friendly.contract.rollout import COMPLETE, FAILED, PAUSED, PROGRESSING, ROLLED_BACK, Rollout
from customer_friendly.controller.plan import (
    POLL_SECONDS,
    Actions,
    BatchView,
    MigrationView,
    PodState,
    Spec,
    _batch_release,
    _between_batches,
    _collect_batch,
    _complete,
    _configmap_change,
    _deadline_failure,
    _group_failed,
    _migrate,
    _next_batch,
    _pause,
    _read_batch,
    _reported_releases,
    _roll_back,
    _start_if_wanted,
    _stay_stopped,
    _wait_for_group,
    _wants_restart,
    plan,
)

NOW = 1000.0
SPEC = Spec("v2", "s", replicas=4, canary=1, max_unavailable="2", batch_deadline_seconds=30)


def agent(state: str, release: str | None, target: str | None = None, error: str | None = None) -> AgentStatus:
    return AgentStatus(state, target, release, error)


def pod(name: str, serving: str | None, view: AgentStatus | None = None, ready: bool = True) -> PodState:
    return PodState(name, ready, serving, view)


def fleet(*serving: str | None) -> list[PodState]:
    """Running pods web-0, web-1, ... annotated with these releases; no agent asked (as the shell does)."""
    return [pod(f"web-{i}", release) for i, release in enumerate(serving)]


def progressing(**changes: Any) -> Rollout:
    return replace(Rollout("v2", "v1", PROGRESSING, message="rolling v2 in place"), **changes)


def in_flight(batch: tuple[str, ...], **changes: Any) -> Rollout:
    """A batch to v2 recorded 5s ago (unless `changes` say otherwise)."""
    return progressing(**{"batch": batch, "batch_release": "v2", "batch_started_at": NOW - 5, "batch_number": 1,
                          **changes})


def rollback_in_flight(batch: tuple[str, ...]) -> Rollout:
    """The rollback of v2 to v1, its batch asked 5s ago."""
    return Rollout("v2", "v1", FAILED, message="pod web-0: boom", batch=batch, batch_release="v1",
                   batch_started_at=NOW - 5, batch_number=2, rolling_back=True, failed_pod="web-0", reason="boom")


def reasons(actions: Actions) -> list[str]:
    return [e.reason for e in actions.events]


# --- Regime 1: starting a rollout, and the release ConfigMap ---------------------------------


@pytest.mark.parametrize(("rollout", "spec", "restart"), [
    pytest.param(progressing(), SPEC, False, id="the same release carries on"),
    pytest.param(progressing(release="v1"), SPEC, True, id="a new release starts afresh"),
    pytest.param(progressing(phase=FAILED), replace(SPEC, retry="1"), True, id="a new retry restarts a failed release"),
    pytest.param(progressing(phase=ROLLED_BACK, retry="1"), replace(SPEC, retry="1"), False,
                 id="the same retry does not restart it again"),
    pytest.param(progressing(phase=FAILED), SPEC, False, id="a failed release without a retry stays failed"),
    pytest.param(progressing(phase=COMPLETE), replace(SPEC, retry="1"), False,
                 id="a retry does not restart a release that did not fail"),
])
def test_when_a_rollout_restarts(rollout: Rollout, spec: Spec, restart: bool) -> None:
    assert _wants_restart(spec, rollout) is restart


@pytest.mark.parametrize(("rollout", "configmap", "release", "previous", "started"), [
    pytest.param(None, "v1", "v2", "v1", True, id="the first record falls back to what the configmap names"),
    pytest.param(None, None, "v2", None, True, id="with no configmap it is a first release"),
    pytest.param(progressing(release="v1", previous="v0"), "v1", "v2", "v1", True,
                 id="a new release falls back to the one pods start on now"),
    pytest.param(progressing(phase=FAILED), "v2", "v2", "v1", True,
                 id="a retry when the configmap names the release keeps the record's previous"),
    pytest.param(in_flight(("web-0",), release="v1", previous="v0", batch_release="v1"), "v2", "v1", "v0", False,
                 id="a new release waits for the batch in flight"),
    pytest.param(progressing(), "v2", "v2", "v1", False, id="the same release keeps its record"),
])
def test_a_fresh_rollout_starts_only_between_batches(rollout: Rollout | None, configmap: str | None, release: str,
                                                     previous: str | None, started: bool) -> None:
    actions = Actions()
    result = _start_if_wanted(replace(SPEC, retry="1"), rollout, configmap, actions, NOW)
    assert (result.release, result.previous) == (release, previous)
    assert reasons(actions) == (["RolloutStarted"] if started else [])
    if started:
        assert result.phase == PROGRESSING and result.started_at == NOW and result.batch == ()
    else:
        assert result is rollout


@pytest.mark.parametrize(("spec", "rollout", "configmap", "write"), [
    pytest.param(SPEC, progressing(), "v1", "v2", id="new pods start on the release being rolled out"),
    pytest.param(SPEC, progressing(), "v2", None, id="a configmap already right is not written"),
    pytest.param(SPEC, progressing(phase=ROLLED_BACK), "v2", "v1", id="new pods never start on a rolled back release"),
    pytest.param(SPEC, progressing(rolling_back=True), "v2", "v1", id="nor on one being rolled back"),
    pytest.param(replace(SPEC, group_block="web"), progressing(), "v1", None,
                 id="a group member waiting for its turn keeps the configmap"),
    pytest.param(replace(SPEC, migrate="m"), progressing(), "v1", None, id="a pending migration keeps the configmap"),
    pytest.param(replace(SPEC, migrate="m"), progressing(previous=None), None, "v2",
                 id="a first release has no other release to start on"),
])
def test_the_configmap_names_the_release_new_pods_must_start_on(spec: Spec, rollout: Rollout,
                                                                 configmap: str | None, write: str | None) -> None:
    assert _configmap_change(spec, rollout, configmap) == write


# --- Regime 2: pods that report what they serve ----------------------------------------------


@pytest.mark.parametrize(("state", "rollout", "marked"), [
    pytest.param(pod("web-0", None, agent("idle", "v2")), progressing(), "v2", id="a new pod idle on v2 is marked"),
    pytest.param(pod("web-0", "v1", agent("done", "v2", "v2")), progressing(), "v2",
                 id="a pod verified late is marked"),
    pytest.param(pod("web-0", "v2", agent("idle", "v2")), progressing(), None, id="an annotated pod is left alone"),
    pytest.param(pod("web-0", None, agent("idle", "v2")), in_flight(("web-0",)), None,
                 id="a pod of the batch in flight is left to the batch"),
    pytest.param(pod("web-0", None, agent("idle", "v2"), ready=False), progressing(), None,
                 id="a pod not running is not marked"),
    pytest.param(pod("web-0", None, agent("restarting", "v1", "v2")), progressing(), None,
                 id="a pod still restarting is not marked"),
    pytest.param(pod("web-0", None, agent("failed", "v1", "v2", "boom")), progressing(), None,
                 id="a pod whose agent failed is not marked"),
    pytest.param(pod("web-0", None, agent("idle", None)), progressing(), None,
                 id="a pod whose agent serves nothing is not marked"),
    pytest.param(pod("web-0", None), progressing(), None, id="a pod whose agent did not answer is not marked"),
])
def test_pods_that_report_what_they_serve_are_marked(state: PodState, rollout: Rollout, marked: str | None) -> None:
    assert _reported_releases(rollout, [state]) == ({"web-0": marked} if marked else {})


# --- Regime 3: a batch in flight -------------------------------------------------------------


@pytest.mark.parametrize(("view", "expected"), [
    pytest.param(agent("done", "v2", "v2"), BatchView(done=("web-0",)), id="an agent done on the release is done"),
    pytest.param(agent("idle", "v2"), BatchView(done=("web-0",)),
                 id="an agent that restarted after its switch is idle on the release and done"),
    pytest.param(agent("restarting", "v1", "v2"), BatchView(remaining=("web-0",)),
                 id="an agent restarting to the release is waited for, not asked again"),
    pytest.param(agent("idle", "v1"), BatchView(remaining=("web-0",), unasked=("web-0",)),
                 id="an agent never asked is asked"),
    pytest.param(agent("failed", "v1", "v2", "disk full"), BatchView(failure=("web-0", "disk full")),
                 id="an agent that failed on the release fails the batch"),
    pytest.param(agent("failed", "v1", "v2"), BatchView(failure=("web-0", "the agent reported failure")),
                 id="a failure without an error still fails the batch"),
    pytest.param(agent("failed", "v1", "v0", "old"), BatchView(remaining=("web-0",), unasked=("web-0",)),
                 id="an old failure for another release is asked again"),
    pytest.param(None, BatchView(remaining=("web-0",)), id="an agent that does not answer is waited for"),
])
def test_a_batch_is_read_pod_by_pod(view: AgentStatus | None, expected: BatchView) -> None:
    assert _read_batch(in_flight(("web-0",)), "v2", [pod("web-0", "v1", view)]) == expected


def test_a_pod_deleted_mid_batch_is_neither_done_nor_waited_for() -> None:
    assert _read_batch(in_flight(("web-0", "gone")), "v2", [pod("web-0", "v1", agent("done", "v2", "v2"))]) \
        == BatchView(done=("web-0",))


@pytest.mark.parametrize(("rollout", "release"), [
    pytest.param(in_flight(("web-0",)), "v2", id="a batch moves its pods to its recorded release"),
    pytest.param(in_flight(("web-0",), batch_release=None), "v2",
                 id="a batch recorded without a release moves them to the wanted one"),
    pytest.param(replace(rollback_in_flight(("web-0",)), batch_release=None), "v1",
                 id="a rollback batch recorded without a release moves them back"),
])
def test_the_release_of_a_batch(rollout: Rollout, release: str) -> None:
    assert _batch_release(rollout) == release


@pytest.mark.parametrize(("started", "remaining", "failure"), [
    pytest.param(NOW - 31, ("web-1", "web-2"), ("web-1", "did not finish within 30s"),
                 id="a batch past its deadline fails on its first unfinished pod"),
    pytest.param(NOW - 30, ("web-1",), None, id="a batch at its deadline still runs"),
    pytest.param(NOW - 31, (), None, id="a finished batch cannot miss its deadline"),
    pytest.param(None, ("web-1",), None, id="a batch without a start time has no deadline"),
])
def test_the_batch_deadline(started: float | None, remaining: tuple[str, ...],
                            failure: tuple[str, str] | None) -> None:
    rollout = in_flight(("web-1", "web-2"), batch_started_at=started)
    assert _deadline_failure(SPEC, rollout, remaining, NOW) == failure


@pytest.mark.parametrize("view", [
    pytest.param(agent("done", "v2", "v2"), id="an agent done on the release"),
    pytest.param(agent("idle", "v2"), id="an agent that restarted after its switch, idle on the release"),
])
def test_a_batch_whose_agents_all_report_done_is_collected_and_the_next_batch_starts(view: AgentStatus) -> None:
    pods = [pod("web-0", "v1", view), *fleet("v1", "v1", "v1", "v1")[1:]]
    rollout = in_flight(("web-0",), total=4)
    actions = Actions()
    collected = _collect_batch(SPEC, rollout, pods, actions, NOW)
    assert collected == replace(rollout, batch=(), batch_release=None, batch_started_at=None, updated=1)
    assert actions.mark == {"web-0": "v2"} and actions.ask == {} and reasons(actions) == ["BatchDone"]
    _between_batches(SPEC, collected, pods, None, actions, NOW)
    assert actions.ask == {"web-1": "v2", "web-2": "v2"}  # max-unavailable 2 after the canary
    assert actions.rollout is not None and actions.rollout.batch == ("web-1", "web-2")
    assert actions.rollout.batch_number == 2 and actions.rollout.batch_started_at == NOW
    # plan() does the same in one pass.
    whole = plan(SPEC, rollout, "v2", pods, NOW)
    assert (whole.mark, whole.ask, whole.rollout) == (actions.mark, actions.ask, actions.rollout)


@pytest.mark.parametrize(("rollout", "pods", "ask", "requeue", "written"), [
    pytest.param(in_flight(("web-0",)), [pod("web-0", "v1", agent("restarting", "v1", "v2"))], {}, POLL_SECONDS,
                 None, id="a batch still running is polled without rewriting the record"),
    pytest.param(in_flight(("web-0",)), [pod("web-0", "v1", agent("idle", "v1"))], {"web-0": "v2"}, POLL_SECONDS,
                 None, id="a batch recorded but never asked is asked after a crash"),
    pytest.param(in_flight(("web-0", "web-1")),
                 [pod("web-0", "v1", agent("done", "v2", "v2")), pod("web-1", "v1", agent("fetching", "v1", "v2"))],
                 {}, POLL_SECONDS, in_flight(("web-0", "web-1"), updated=1, total=2),
                 id="a batch half done records its progress"),
    pytest.param(in_flight(("web-0",), release="v1", previous="v0", batch_release="v1"),
                 [pod("web-0", "v0", agent("done", "v1", "v1"))], {}, 0.0,
                 Rollout("v1", "v0", PROGRESSING, 1, 1, "rolling v2 in place", batch_number=1),
                 id="a batch superseded by a newer release is collected and the next pass starts that one"),
])
def test_a_batch_in_flight_ends_the_pass(rollout: Rollout, pods: list[PodState], ask: dict[str, str],
                                         requeue: float, written: Rollout | None) -> None:
    actions = Actions()
    assert _collect_batch(SPEC, rollout, pods, actions, NOW) is None
    assert (actions.ask, actions.requeue_seconds, actions.rollout) == (ask, requeue, written)


def test_a_batch_past_its_deadline_fails_the_rollout_and_rolls_back_the_moved_pods() -> None:
    pods = [pod("web-0", "v2"), pod("web-1", "v1", agent("restarting", "v1", "v2")), pod("web-2", "v1")]
    rollout = in_flight(("web-1",), batch_started_at=NOW - 60, batch_number=2, updated=1, total=3)
    actions = Actions()
    assert _collect_batch(SPEC, rollout, pods, actions, NOW) is None
    assert reasons(actions) == ["RolloutFailed", "RollingBack", "BatchStarted"]
    assert actions.configmap_release == "v1"
    assert actions.ask == {"web-0": "v1", "web-1": "v1"}  # the moved pod, and the one of the failed batch
    failed = actions.rollout
    assert failed is not None and failed.phase == FAILED and failed.rolling_back
    assert (failed.failed_pod, failed.reason) == ("web-1", "did not finish within 30s")
    assert (failed.batch, failed.batch_release, failed.batch_number) == (("web-0", "web-1"), "v1", 3)


def test_a_rollback_whose_own_batch_fails_ends_failed_and_is_not_retried() -> None:
    pods = [pod("web-0", "v2", agent("failed", "v2", "v1", "disk full")), pod("web-1", "v1")]
    actions = Actions()
    assert _collect_batch(SPEC, rollback_in_flight(("web-0",)), pods, actions, NOW) is None
    stopped = actions.rollout
    assert stopped is not None and stopped.phase == FAILED and not stopped.rolling_back and stopped.batch == ()
    assert stopped.message == "rollback failed on pod web-0: disk full"
    assert reasons(actions) == ["RollbackFailed"] and actions.ask == {}
    again = plan(SPEC, stopped, "v1", pods, NOW + 1)
    assert again.ask == {} and again.rollout is None and again.configmap_release is None


def test_a_failed_rollback_asks_none_of_its_pods_that_were_recorded_but_not_yet_asked() -> None:
    """Once the record says the rollback stopped, nothing more moves (the pod would be asked, but
    never marked, since the record has no batch any more)."""
    pods = [pod("web-0", "v2", agent("failed", "v2", "v1", "disk full")), pod("web-1", "v2", agent("idle", "v2"))]
    actions = Actions()
    assert _collect_batch(SPEC, rollback_in_flight(("web-0", "web-1")), pods, actions, NOW) is None
    assert actions.rollout is not None and actions.rollout.phase == FAILED and not actions.rollout.rolling_back
    assert actions.ask == {} and reasons(actions) == ["RollbackFailed"]


# --- Regime 4: between batches ---------------------------------------------------------------


def test_an_app_group_failure_before_any_pod_moved_fails_without_touching_pods() -> None:
    actions = _group_failed(SPEC, progressing(), fleet("v1", "v1"), "worker failed: boom", Actions(), NOW)
    assert actions.rollout == progressing(phase=FAILED, reason="app group: worker failed: boom",
                                          message="app group: worker failed: boom; not started")
    assert actions.ask == {} and actions.mark == {} and actions.configmap_release is None
    assert reasons(actions) == ["RolloutFailed"]


def test_an_app_group_failure_after_pods_moved_rolls_them_back() -> None:
    actions = _group_failed(SPEC, progressing(batch_number=1), fleet("v2", "v1"), "worker failed", Actions(), NOW)
    assert actions.ask == {"web-0": "v1"} and actions.configmap_release == "v1"
    assert actions.rollout is not None and actions.rollout.rolling_back and actions.rollout.failed_pod is None


@pytest.mark.parametrize(("message", "written"), [
    pytest.param("rolling v2 in place", "waiting for web (app shop)", id="the group wait sets the message"),
    pytest.param("waiting for web (app shop)", None, id="the group wait rewrites nothing while it waits"),
])
def test_the_group_wait_sets_the_message_and_requeues(message: str, written: str | None) -> None:
    actions = _wait_for_group(progressing(message=message), "web (app shop)", Actions())
    assert (actions.rollout.message if actions.rollout else None) == written
    assert actions.requeue_seconds == 1.0 and actions.ask == {}


@pytest.mark.parametrize(("migration", "run", "phase", "requeue"), [
    pytest.param(None, "v2", PROGRESSING, 1.0, id="a migration not run yet is started"),
    pytest.param(MigrationView("running"), None, None, 1.0, id="a running migration is waited for"),
    pytest.param(MigrationView("succeeded"), None, PROGRESSING, 0.0, id="a migration that succeeded lets pods move"),
    pytest.param(MigrationView("failed", "PG::UndefinedTable"), None, FAILED, None,
                 id="a migration that failed fails the release"),
])
def test_a_release_with_a_migration_waits_for_it(migration: MigrationView | None, run: str | None,
                                                 phase: str | None, requeue: float | None) -> None:
    actions = _migrate(replace(SPEC, migrate="db:migrate"), progressing(), migration, Actions())
    assert actions.run_migration == run and actions.ask == {} and actions.requeue_seconds == requeue
    assert (actions.rollout.phase if actions.rollout else None) == phase
    if phase == FAILED:
        assert actions.configmap_release == "v1"


@pytest.mark.parametrize(("rollout", "pods", "phase", "ask"), [
    pytest.param(rollback_in_flight(()), fleet("v2", "v1"), FAILED, {"web-0": "v1"},
                 id="a rollback asks every pod not on the previous release back"),
    pytest.param(rollback_in_flight(()), [*fleet("v1"), pod("web-1", "v2", ready=False)], ROLLED_BACK, {},
                 id="a rollback with every running pod back ends rolled back"),
    pytest.param(replace(rollback_in_flight(()), previous=None), fleet("v2"), FAILED, {},
                 id="a rollback with nothing to go back to stops failed"),
])
def test_a_rollback_goes_on_until_every_pod_is_back(rollout: Rollout, pods: list[PodState], phase: str,
                                                    ask: dict[str, str]) -> None:
    actions = _roll_back(SPEC, rollout, pods, Actions(), NOW)
    assert actions.rollout is not None and actions.rollout.phase == phase and actions.ask == ask
    assert actions.rollout.rolling_back == bool(ask)
    if phase == ROLLED_BACK:
        assert actions.rollout.message == "rolled back to v1 after pod web-0 failed: boom"


@pytest.mark.parametrize(("mark", "written"), [
    pytest.param({}, False, id="a stopped rollout rewrites nothing"),
    pytest.param({"web-9": "v1"}, True, id="a stopped rollout is written back with pods marked"),
])
def test_a_stopped_rollout_stays_stopped(mark: dict[str, str], written: bool) -> None:
    rollout = progressing(phase=ROLLED_BACK)
    actions = _stay_stopped(rollout, Actions(mark=dict(mark)))
    assert actions.rollout == (rollout if written else None) and actions.ask == {}


@pytest.mark.parametrize(("rollout", "pods", "written", "events"), [
    pytest.param(progressing(phase=COMPLETE, updated=2, total=2, message="all 2 running pods serve v2"),
                 fleet("v2", "v2"), None, [], id="a complete rollout produces no new annotation when nothing changed"),
    pytest.param(progressing(updated=1, total=2), fleet("v2", "v2"),
                 progressing(phase=COMPLETE, updated=2, total=2, message="all 2 running pods serve v2"),
                 ["RolloutComplete"], id="a rollout whose pods all moved becomes complete"),
    pytest.param(progressing(phase=COMPLETE, updated=1, total=1, message="all 1 running pods serve v2"),
                 [*fleet("v2"), pod("web-1", None, ready=False)],
                 progressing(phase=COMPLETE, updated=1, total=2, message="all 1 running pods serve v2; "
                             "1 not running yet start on it from the ConfigMap"),
                 [], id="a complete rollout counts pods not running yet without a new event"),
])
def test_a_complete_rollout(rollout: Rollout, pods: list[PodState], written: Rollout | None,
                            events: list[str]) -> None:
    updated = sum(1 for p in pods if p.serving == "v2")
    actions = _complete(SPEC, rollout, pods, updated, Actions())
    assert actions.rollout == written and reasons(actions) == events


@pytest.mark.parametrize(("rollout", "written"), [
    pytest.param(progressing(phase=PAUSED, updated=1, total=3, message="paused after 1 of 3 pods"), None,
                 id="a paused rollout stays paused"),
    pytest.param(progressing(updated=1, total=3),
                 progressing(phase=PAUSED, updated=1, total=3, message="paused after 1 of 3 pods"),
                 id="a progressing rollout pauses between batches"),
])
def test_a_paused_rollout_starts_no_batch(rollout: Rollout, written: Rollout | None) -> None:
    actions = _pause(rollout, fleet("v2", "v1", "v1"), 1, Actions())
    assert actions.rollout == written and actions.ask == {}


@pytest.mark.parametrize(("rollout", "updated", "batch"), [
    pytest.param(progressing(), 0, ("web-0",), id="the first batch is the canary"),
    pytest.param(progressing(batch_number=1), 1, ("web-1", "web-2"), id="later batches take max unavailable"),
])
def test_the_next_batch(rollout: Rollout, updated: int, batch: tuple[str, ...]) -> None:
    pods = fleet("v2" if updated else "v1", "v1", "v1", "v1")
    pending = [p for p in pods if p.serving != "v2"]
    actions = _next_batch(SPEC, rollout, pending, pods, updated, Actions(), NOW)
    assert actions.ask == dict.fromkeys(batch, "v2") and actions.requeue_seconds == POLL_SECONDS
    assert actions.rollout == replace(rollout, phase=PROGRESSING, updated=updated, total=4, batch=batch,
                                      batch_release="v2", batch_started_at=NOW,
                                      batch_number=rollout.batch_number + 1,
                                      message=actions.rollout.message if actions.rollout else "")


@pytest.mark.parametrize(("spec", "rollout", "pods", "migration", "phase", "message", "ask"), [
    pytest.param(replace(SPEC, group_failure="worker failed", group_block="web"), progressing(), fleet("v1"), None,
                 FAILED, "app group: worker failed; not started", {},
                 id="an app group failure comes before the group wait"),
    pytest.param(replace(SPEC, group_block="web", migrate="m"), progressing(), fleet("v1"), None,
                 PROGRESSING, "waiting for web", {}, id="the group wait comes before the migration"),
    pytest.param(replace(SPEC, migrate="m", paused=True), progressing(), fleet("v1"), None,
                 PROGRESSING, "migrating: m", {}, id="the migration comes before the pause"),
    pytest.param(replace(SPEC, paused=True, group_failure="worker failed"), rollback_in_flight(()),
                 fleet("v2", "v1"), None, FAILED, "rolling back 1 pods to v1", {"web-0": "v1"},
                 id="a rollback goes on whatever the spec says"),
    pytest.param(replace(SPEC, migrate="m", group_failure="worker failed"), progressing(phase=FAILED),
                 fleet("v1"), None, FAILED, "rolling v2 in place", {}, id="a failed rollout stays as it is"),
    pytest.param(replace(SPEC, paused=True), progressing(), fleet("v2"), None,
                 COMPLETE, "all 1 running pods serve v2", {}, id="a rollout with no pod pending completes even paused"),
    pytest.param(replace(SPEC, paused=True), progressing(), fleet("v1"), None,
                 PAUSED, "paused after 0 of 1 pods", {}, id="a paused rollout with pods pending pauses"),
    pytest.param(SPEC, progressing(), fleet("v1", "v1"), None,
                 PROGRESSING, "batch 1: 1 pods to v2 (0 of 2 done)", {"web-0": "v2"},
                 id="otherwise the next batch starts"),
])
def test_between_batches_the_first_regime_that_applies_wins(spec: Spec, rollout: Rollout, pods: list[PodState],
                                                            migration: MigrationView | None, phase: str, message: str,
                                                            ask: dict[str, str]) -> None:
    actions = _between_batches(spec, rollout, pods, migration, Actions(), NOW)
    result = actions.rollout or rollout
    assert (result.phase, result.message, actions.ask) == (phase, message, ask)
