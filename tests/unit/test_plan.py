"""The rollout plan, step by step, with agents simulated as plain data (no I/O, no mocks)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from customer_friendly.contract.agent_api import AgentStatus
from customer_friendly.contract.rollout import COMPLETE, FAILED, PAUSED, PROGRESSING, ROLLED_BACK, Rollout
from customer_friendly.controller.plan import POLL_SECONDS, Actions, MigrationView, PodState, Spec, batch_size, plan

NOW = 1000.0


def pods(n: int, serving: str = "v1") -> list[PodState]:
    return [PodState(f"web-{i}", True, serving, AgentStatus("idle", None, serving)) for i in range(n)]


def written(actions: Actions) -> Rollout:
    """The rollout annotation a plan wrote (there must be one)."""
    assert actions.rollout is not None
    return actions.rollout


class World:
    """Pods whose agents do instantly (or fail) whatever they are asked; the plan runs to a fixpoint."""

    def __init__(self, spec: Spec, pod_states: list[PodState], configmap: str | None = "v1",
                 rollout: Rollout | None = None, broken: frozenset[str] = frozenset()) -> None:
        self.spec, self.configmap, self.rollout, self.broken = spec, configmap, rollout, broken
        self.pods = {p.name: p for p in pod_states}
        self.asked: list[tuple[str, str]] = []
        self.batches: list[tuple[str, ...]] = []
        self.events: list[str] = []
        self.now = NOW
        self.gate_writes: list[tuple[str, bool]] = []
        self.unsafe_asks: list[str] = []
        """Pods asked while traffic could still reach them (traffic: drain)."""

    def _apply_gates(self, actions: Actions) -> None:
        """Notes every ask of a pod traffic could still reach, then writes the conditions."""
        for name in actions.ask:
            pod = self.pods[name]
            if pod.gated and (pod.gate_open is not False or pod.in_endpoints):
                self.unsafe_asks.append(name)
        for name, open_ in actions.gates.items():
            self.pods[name] = replace(self.pods[name], gate_open=open_, gate_closed_at=None if open_ else self.now)
            self.gate_writes.append((name, open_))

    def _endpoints_follow_gates(self) -> None:
        """The kubelet and the EndpointSlice controller, one step behind the condition: a gated
        pod is listed while its gate is open, and dropped a step after it closes."""
        for name, pod in self.pods.items():
            if pod.gated:
                self.pods[name] = replace(pod, in_endpoints=pod.gate_open is True)

    @property
    def record(self) -> Rollout:
        """The rollout annotation as last written (there must be one)."""
        assert self.rollout is not None
        return self.rollout

    def step(self, finish: bool = True) -> None:
        self._endpoints_follow_gates()
        actions = plan(self.spec, self.rollout, self.configmap, list(self.pods.values()), self.now)
        self.events += [e.reason for e in actions.events]
        self._apply_gates(actions)
        if actions.configmap_release:
            self.configmap = actions.configmap_release
        for name, release in actions.mark.items():
            self.pods[name] = replace(self.pods[name], serving=release)
        if actions.rollout is not None:
            self.rollout = actions.rollout
            if actions.ask:
                self.batches.append(written(actions).batch)
        for name, release in actions.ask.items():
            self.asked.append((name, release))
            pod = self.pods[name]
            if not finish:
                view = AgentStatus("restarting", release, pod.agent.release if pod.agent else None)
            elif release in self.broken:
                view = AgentStatus("failed", release, release, "restart not done after 120s")
            else:
                view = AgentStatus("done", release, release)
            self.pods[name] = replace(pod, agent=view)
        self.now += 1

    def run(self, steps: int = 50, patience: int = 5) -> World:
        """Steps until nothing changed for `patience` steps in a row (time passes meanwhile, so
        a plan that waits for seconds to pass, such as a drained pod settling, gets there)."""
        still = 0
        for _ in range(steps):
            before = (self.rollout, dict(self.pods), self.configmap)
            self.step()
            still = still + 1 if (self.rollout, dict(self.pods), self.configmap) == before else 0
            if still >= patience:
                break
        return self


@pytest.mark.parametrize(("replicas", "max_unavailable", "canary", "first", "size"), [
    (10, "50%", 1, True, 1), (10, "50%", 1, False, 5), (10, "25%", 0, True, 3), (3, "1", 2, True, 2),
    (3, "2", 1, False, 2), (1, "50%", 1, False, 1), (7, "100%", 1, False, 7),
])
def test_batch_sizes(replicas: int, max_unavailable: str, canary: int, first: bool, size: int) -> None:
    spec = Spec("v2", "s3://b/{release}.tar.gz", replicas=replicas, max_unavailable=max_unavailable, canary=canary)
    assert batch_size(spec, first) == size


def test_a_rollout_goes_canary_first_then_in_batches_and_completes() -> None:
    world = World(Spec("v2", "s", replicas=5, max_unavailable="50%", canary=1), pods(5)).run()
    assert world.batches == [("web-0",), ("web-1", "web-2", "web-3"), ("web-4",)]
    assert world.configmap == "v2"
    assert {p.serving for p in world.pods.values()} == {"v2"}
    assert world.record.phase == COMPLETE and world.record.previous == "v1"
    assert world.record.updated == 5 and world.record.total == 5
    assert world.events[0] == "RolloutStarted" and world.events[-1] == "RolloutComplete"


def test_every_agent_is_asked_exactly_once() -> None:
    world = World(Spec("v2", "s", replicas=6), pods(6)).run()
    assert sorted(world.asked) == [(f"web-{i}", "v2") for i in range(6)]


def test_the_configmap_moves_before_any_agent_is_asked() -> None:
    world = World(Spec("v2", "s", replicas=3), pods(3))
    world.step()
    assert world.configmap == "v2" and world.asked == [("web-0", "v2")]


def test_a_batch_is_recorded_before_its_agents_are_asked_and_resumed_after_a_crash() -> None:
    world = World(Spec("v2", "s", replicas=3, canary=1), pods(3))
    world.step(finish=False)  # web-0 is restarting when the controller dies
    recorded = world.record
    assert recorded.batch == ("web-0",) and recorded.batch_release == "v2"
    # A new controller reads the same annotation and agent states: it asks nobody again.
    again = plan(world.spec, recorded, world.configmap, list(world.pods.values()), NOW + 5)
    assert again.ask == {}
    assert again.requeue_seconds == POLL_SECONDS


def test_a_batch_recorded_but_never_asked_is_asked_after_a_crash() -> None:
    world = World(Spec("v2", "s", replicas=3, canary=1), pods(3))
    actions = plan(world.spec, None, "v1", list(world.pods.values()), NOW)
    # The controller wrote the annotation and died before calling the agent.
    resumed = plan(world.spec, actions.rollout, "v2", list(world.pods.values()), NOW + 3)
    assert resumed.ask == {"web-0": "v2"}


def test_pods_not_running_are_skipped_and_verified_when_they_report() -> None:
    states = [*pods(2), PodState("web-new", False, None, None)]
    world = World(Spec("v2", "s", replicas=3), states).run()
    assert ("web-new", "v2") not in world.asked
    assert world.record.phase == COMPLETE and "1 not running yet" in world.record.message
    world.pods["web-new"] = PodState("web-new", True, None, AgentStatus("idle", None, "v2"))
    world.run()
    assert world.pods["web-new"].serving == "v2"


def test_a_failure_stops_the_rollout_and_rolls_back_what_moved() -> None:
    world = World(Spec("v2", "s", replicas=4, canary=1, max_unavailable="2"), pods(4), broken=frozenset({"v2"}))
    world.run()
    assert world.record.phase == ROLLED_BACK
    assert world.record.failed_pod == "web-0" and "restart not done" in str(world.record.reason)
    assert world.asked == [("web-0", "v2"), ("web-0", "v1")]  # the canary only, then back
    assert {p.serving for p in world.pods.values()} == {"v1"}
    assert world.configmap == "v1"
    assert "RolloutFailed" in world.events and "RolledBack" in world.events


def test_a_failed_release_is_not_retried_until_a_new_release_or_retry() -> None:
    world = World(Spec("v2", "s", replicas=2), pods(2), broken=frozenset({"v2"})).run()
    asked = len(world.asked)
    world.run()
    assert len(world.asked) == asked
    world.broken = frozenset()
    world.spec = replace(world.spec, retry="1")
    world.run()
    assert world.record.phase == COMPLETE and {p.serving for p in world.pods.values()} == {"v2"}


def test_without_auto_rollback_a_failure_just_stops() -> None:
    world = World(Spec("v2", "s", replicas=3, auto_rollback=False), pods(3), broken=frozenset({"v2"})).run()
    assert world.record.phase == FAILED and world.asked == [("web-0", "v2")]
    assert world.configmap == "v1"  # new pods never start on a release known to fail


def test_a_batch_past_its_deadline_fails() -> None:
    world = World(Spec("v2", "s", replicas=2, batch_deadline_seconds=30), pods(2))
    world.step(finish=False)
    world.now += 60
    world.step()
    assert "did not finish within 30s" in (world.record.reason or "")


def test_paused_stops_between_batches_and_resumes() -> None:
    world = World(Spec("v2", "s", replicas=4, canary=1, max_unavailable="1"), pods(4))
    world.step()  # canary asked
    world.spec = replace(world.spec, paused=True)
    world.run()
    assert world.record.phase == PAUSED and len(world.asked) == 1
    assert world.pods["web-0"].serving == "v2"
    world.spec = replace(world.spec, paused=False)
    world.run()
    assert world.record.phase == COMPLETE and len(world.asked) == 4


def test_a_newer_release_mid_batch_finishes_the_batch_then_moves_everyone_to_it() -> None:
    world = World(Spec("v2", "s", replicas=4, canary=1), pods(4))
    world.step(finish=False)  # the canary is restarting to v2
    world.spec = replace(world.spec, release="v3")
    world.step()
    assert world.configmap == "v3" and world.record.release == "v2" and world.record.batch == ("web-0",)
    world.pods["web-0"] = replace(world.pods["web-0"], agent=AgentStatus("done", "v2", "v2"))
    world.run()
    assert world.record.release == "v3" and world.record.phase == COMPLETE
    assert {p.serving for p in world.pods.values()} == {"v3"}
    assert ("web-0", "v3") in world.asked


def test_scaling_up_mid_rollout_includes_the_new_running_pods() -> None:
    world = World(Spec("v2", "s", replicas=3, canary=1, max_unavailable="1"), pods(3))
    world.step()
    world.pods["web-9"] = PodState("web-9", True, None, AgentStatus("idle", None, "v1"))
    world.run()
    assert world.pods["web-9"].serving == "v2" and world.record.total == 4


def test_a_pod_whose_agent_has_not_answered_is_waited_for_never_asked() -> None:
    """A pod is Running before its agent listens. Born from the Deployment or the ConfigMap, it
    may serve the release already: asking it would restart Puma for nothing. The plan moves the
    pods it knows about and waits for the silent one to say what it serves."""
    spec = Spec("v2", "s", replicas=3, canary=1, max_unavailable="1", batch_deadline_seconds=30)
    states = [*pods(2), PodState("web-new", True, None, None)]  # its agent not listening yet
    world = World(spec, states)
    world.run()
    assert ("web-new", "v2") not in world.asked and world.batches == [("web-0",), ("web-1",)]
    assert world.record.phase == PROGRESSING and not world.record.batch
    assert world.record.message == "waiting for the agents of 1 pods to say what they serve"
    world.pods["web-new"] = PodState("web-new", True, None, AgentStatus("idle", None, "v2"))  # born on v2
    world.run()
    assert world.pods["web-new"].serving == "v2" and ("web-new", "v2") not in world.asked
    assert world.record.phase == COMPLETE and world.record.updated == 3


def test_a_first_release_asks_no_pod_that_starts_on_it() -> None:
    """The first release: every pod starts on it from the Deployment. Agents still starting are
    waited for, then verified; none is asked (a pod asked here would restart its Puma)."""
    states = [PodState(f"web-{i}", True, None, None) for i in range(3)]
    world = World(Spec("v1", "s", replicas=3), states, configmap=None)
    world.run()
    assert world.asked == [] and world.record.phase == PROGRESSING
    for name in world.pods:
        world.pods[name] = PodState(name, True, None, AgentStatus("idle", None, "v1"))
    world.run()
    assert world.asked == [] and world.record.phase == COMPLETE and world.record.updated == 3


def test_a_silent_agent_is_asked_once_overdue_and_counts_as_done_when_idle_on_the_release() -> None:
    """Waiting for a silent agent ends a batch deadline after the rollout started: it is then
    asked like any pending pod (an agent that never answers fails its batch). If it was in fact
    born on the release, its agent stays idle on it, and the batch takes that as done."""
    spec = Spec("v2", "s", replicas=3, canary=1, max_unavailable="1", batch_deadline_seconds=30)
    states = [*pods(2), PodState("web-new", True, None, None)]
    world = World(spec, states)
    world.run()
    world.now += spec.batch_deadline_seconds
    world.step()
    assert world.record.batch == ("web-new",)
    world.pods["web-new"] = PodState("web-new", True, None, AgentStatus("idle", None, "v2"))  # a no-op ask
    world.step()
    assert world.pods["web-new"].serving == "v2" and not world.record.batch
    world.run()
    assert world.record.phase == COMPLETE and world.record.updated == 3


def test_the_rollout_annotation_round_trips() -> None:
    rollout = Rollout("v2", "v1", PROGRESSING, 1, 3, "batch 1", ("web-0",), "v2", NOW, 1)
    assert Rollout.from_annotation(rollout.to_annotation()) == rollout
    assert Rollout.from_annotation("not json") is None and Rollout.from_annotation(None) is None


def test_a_migration_runs_before_any_pod_is_touched_and_the_configmap_waits_for_it() -> None:
    spec = Spec("v2", "s", replicas=3, migrate="bin/rails db:migrate")
    world = World(spec, pods(3))
    actions = plan(spec, None, "v1", list(world.pods.values()), NOW)
    assert actions.run_migration == "v2" and actions.ask == {}
    assert actions.configmap_release is None  # new pods stay on v1 until the schema is there
    running = plan(spec, actions.rollout, "v1", list(world.pods.values()), NOW + 1, MigrationView("running"))
    assert running.run_migration is None and running.ask == {} and running.requeue_seconds == 1.0
    done = plan(spec, actions.rollout, "v1", list(world.pods.values()), NOW + 2, MigrationView("succeeded"))
    assert written(done).migrated and "MigrationSucceeded" in [e.reason for e in done.events]
    after = plan(spec, done.rollout, "v1", list(world.pods.values()), NOW + 3, MigrationView("succeeded"))
    assert after.configmap_release == "v2" and after.ask == {"web-0": "v2"}


def test_a_failed_migration_fails_the_release_without_touching_a_pod() -> None:
    spec = Spec("v2", "s", replicas=3, migrate="bin/rails db:migrate")
    world = World(spec, pods(3))
    started = plan(spec, None, "v1", list(world.pods.values()), NOW)
    failed = plan(spec, started.rollout, "v1", list(world.pods.values()), NOW + 1,
                  MigrationView("failed", "PG::UndefinedTable"))
    assert written(failed).phase == FAILED and "PG::UndefinedTable" in str(written(failed).reason)
    assert failed.ask == {} and written(failed).updated == 0
    later = plan(spec, failed.rollout, "v1", list(world.pods.values()), NOW + 2, MigrationView("failed", "x"))
    assert later.ask == {} and later.run_migration is None


def test_a_first_release_has_nothing_to_wait_for() -> None:
    spec = Spec("v1", "s", replicas=2, migrate="bin/rails db:migrate")
    actions = plan(spec, None, None, pods(2, serving="v1"), NOW)
    assert actions.run_migration is None and written(actions).phase == COMPLETE


def test_a_group_member_waits_for_the_earlier_roles_and_its_configmap_with_it() -> None:
    spec = Spec("v2", "s", replicas=2, group_block="web (app shop)")
    actions = plan(spec, None, "v1", pods(2), NOW)
    assert actions.ask == {} and "waiting for web" in written(actions).message
    assert actions.configmap_release is None and actions.requeue_seconds == 1.0
    go = plan(replace(spec, group_block=None), actions.rollout, "v1", pods(2), NOW + 1)
    assert go.ask == {"web-0": "v2"} and go.configmap_release == "v2"


def test_a_failure_elsewhere_in_the_group_rolls_back_what_moved_here() -> None:
    world = World(Spec("v2", "s", replicas=2, max_unavailable="100%", canary=0), pods(2)).run()
    assert world.record.phase == COMPLETE
    world.spec = replace(world.spec, group_failure="worker failed: no process found")
    world.run()
    assert world.record.phase == ROLLED_BACK and "app group: worker failed" in world.record.message
    assert {p.serving for p in world.pods.values()} == {"v1"} and world.configmap == "v1"


def test_a_group_failure_before_starting_fails_without_touching_pods() -> None:
    spec = Spec("v2", "s", replicas=2, group_block="web", group_failure="web failed: boom")
    actions = plan(spec, None, "v1", pods(2), NOW)
    assert written(actions).phase == FAILED and actions.ask == {} and "not started" in written(actions).message


# --- traffic: drain ---------------------------------------------------------------------------

DRAIN = Spec("v2", "s", replicas=4, canary=1, max_unavailable="2", drain=True, settle_seconds=3)


def gated_pods(n: int, serving: str = "v1") -> list[PodState]:
    return [replace(p, gated=True, gate_open=True, in_endpoints=True) for p in pods(n, serving)]


def test_drain_holds_each_pod_out_of_the_endpoints_and_settles_it_before_its_agent_is_asked() -> None:
    world = World(DRAIN, gated_pods(4))
    world.step()
    assert world.record.batch == ("web-0",) and world.asked == [] and world.gate_writes == [("web-0", False)]
    for _ in range(2):  # out of the endpoints a step later, then settle-seconds (3s, a step is 1s)
        world.step()
        assert world.asked == []
    world.step()
    assert world.asked == [("web-0", "v2")]
    world.run()
    assert world.record.phase == COMPLETE and world.record.updated == 4
    assert sorted(name for name, _ in world.asked) == [f"web-{i}" for i in range(4)] and world.unsafe_asks == []
    assert all(p.gate_open is True for p in world.pods.values())
    assert [w for w in world.gate_writes if w[0] == "web-1"] == [("web-1", False), ("web-1", True)]


def test_drain_rolls_back_the_drained_way_and_lets_every_pod_back_in() -> None:
    world = World(DRAIN, gated_pods(4), broken=frozenset({"v2"}))
    world.run()
    assert world.record.phase == ROLLED_BACK and world.unsafe_asks == []
    assert ("web-0", "v1") in world.asked and all(p.gate_open is True for p in world.pods.values())


def test_a_new_gated_pod_is_let_in_and_a_pod_left_held_out_comes_back() -> None:
    """Level-based: with no rollout to do, pods whose gate was never set, or was left closed by
    a batch cut short, are let in."""
    states = [replace(p, gate_open=None, in_endpoints=False) for p in gated_pods(1, "v2")]
    states += [replace(p, name="web-9", gate_open=False, gate_closed_at=NOW - 60, in_endpoints=False)
               for p in gated_pods(1, "v2")]
    world = World(DRAIN, states, configmap="v2", rollout=Rollout("v2", "v1", COMPLETE, 2, 2))
    world.step()
    assert sorted(world.gate_writes) == [("web-0", True), ("web-9", True)] and world.asked == []


def test_drain_asks_a_pod_without_the_gate_at_once() -> None:
    """A pod from a template older than traffic: drain has no gate to close: asked as live."""
    world = World(DRAIN, pods(2))
    world.step()
    assert world.asked == [("web-0", "v2")] and world.gate_writes == []


def test_a_gate_is_not_touched_when_traffic_is_live() -> None:
    world = World(replace(DRAIN, drain=False), gated_pods(2))
    world.run()
    assert world.record.phase == COMPLETE and world.gate_writes == []
