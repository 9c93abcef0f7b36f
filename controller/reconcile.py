"""reconcile(namespace, name): read the state, plan with the pure function, apply. Nothing else.

Returns when to look again: soon while a batch is in flight, never when there is nothing to
do (the watch brings the next change).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import Counter, Histogram

from customer_friendly import contract as c
from customer_friendly.contract import groups
from customer_friendly.contract.agent_api import AgentStatus, ReleaseRequest
from customer_friendly.contract.objects import Obj, annotations_of, pod_running, pod_selector
from customer_friendly.contract.policy import Policy
from customer_friendly.contract.policy_source import PolicySource
from customer_friendly.contract.readiness import gate_condition, read_gate
from customer_friendly.contract.rollout import Rollout
from customer_friendly.contract.settings import Refusal, ReleaseSettings, opted_in, resolve
from customer_friendly.controller.agents import AgentClient, AgentError, agent_identity
from customer_friendly.controller.config import ControllerConfig
from customer_friendly.controller.kube import Kube
from customer_friendly.controller.migration import job_for, job_state
from customer_friendly.controller.plan import Actions, MigrationView, PodState, Spec, plan

logger = logging.getLogger(__name__)

ROLLOUTS = Counter("cfo_controller_rollouts", "Rollouts finished, by outcome", ["outcome"])
PODS_UPDATED = Counter("cfo_controller_pods_updated", "Pods moved to a release in place")
AGENT_ERRORS = Counter("cfo_controller_agent_call_errors", "Agent calls that failed or could not connect")
DURATION = Histogram("cfo_controller_rollout_duration_seconds", "From a release annotation to its outcome",
                     buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600))


class Context(logging.LoggerAdapter):
    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        extra = self.extra or {}
        return f"[{extra.get('namespace')}/{extra.get('name')} {extra.get('release')}] {msg}", kwargs


def agent_port(pod: dict[str, Any], default: int) -> int:
    spec = pod.get("spec") or {}
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for port in container.get("ports") or []:
            if port.get("name") == c.AGENT_PORT_NAME:
                return int(port["containerPort"])
    return default


DEFAULT_CONFIG = ControllerConfig()


def spec_for(deployment: Obj, settings: ReleaseSettings, policy: Policy, config: ControllerConfig) -> Spec:
    """What the user asked for, as the plan reads it. Pure."""
    return Spec(
        release=settings.release, source=settings.source, restart=settings.restart,
        replicas=int(deployment["spec"].get("replicas") or 1), max_unavailable=settings.max_unavailable,
        canary=settings.canary, paused=settings.paused, auto_rollback=policy.auto_rollback,
        retry=annotations_of(deployment).get(c.RETRY), batch_deadline_seconds=config.batch_deadline_seconds,
        migrate=settings.migrate, drain=settings.drains_traffic, settle_seconds=settings.settle_seconds,
    )


@dataclass(frozen=True)
class Observed:
    """One reconcile's reading of the cluster."""

    deployment: Obj
    settings: ReleaseSettings
    spec: Spec
    rollout: Rollout | None
    pods: dict[str, Obj]
    pod_states: list[PodState]
    migration: MigrationView | None
    job_name: str
    log: logging.LoggerAdapter


class Reconciler:
    def __init__(self, kube: Kube, agents: AgentClient, policy: PolicySource,
                 config: ControllerConfig = DEFAULT_CONFIG, may_act: Callable[[], bool] = lambda: True) -> None:
        self.kube, self.agents, self.policy, self.config = kube, agents, policy, config
        self.may_act = may_act
        """Whether this replica still leads (Controller.leads), asked again just before agents are:
        a reconcile whose API writes hung through an API server outage may end after the Lease
        passed to another replica, which asks the same agents."""

    def reconcile(self, namespace: str, name: str) -> float | None:
        observed = self._observe(namespace, name)
        if observed is None:
            return None
        actions = plan(observed.spec, observed.rollout, self.kube.configmap_release(namespace, name),
                       observed.pod_states, time.time(), observed.migration)
        self._apply(observed, actions)
        return actions.requeue_seconds

    # --- read -------------------------------------------------------------------------------

    def _observe(self, namespace: str, name: str) -> Observed | None:
        """Everything the plan needs, read afresh; None for a Deployment that is gone, not opted
        in, or whose annotations the policy refuses (the webhook has said why to its author)."""
        deployment = self.kube.deployment(namespace, name)
        if deployment is None:
            return None
        annotations = annotations_of(deployment)
        try:
            if not opted_in(annotations):
                return None
            policy = self.policy.current()
            containers = [ct["name"] for ct in deployment["spec"]["template"]["spec"]["containers"]]
            settings = resolve(annotations, containers, policy)
        except Refusal as refusal:
            logger.warning("%s/%s: not reconciled: %s", namespace, name, refusal)
            return None
        log = Context(logger, {"namespace": namespace, "name": name, "release": settings.release})
        spec = spec_for(deployment, settings, policy, self.config)
        if annotations.get(c.APP):
            gate = groups.gate(deployment, self.kube.deployments(namespace))
            spec = replace(spec, group_block=gate.waiting_for, group_failure=gate.failed)
        rollout = Rollout.from_annotation(annotations.get(c.ROLLOUT))
        pods = {p["metadata"]["name"]: p for p in self.kube.pods(namespace, pod_selector(deployment))}
        job_name = c.migration_job_name(name, spec.release + (f"-{spec.retry}" if spec.retry else ""))
        # Only a batch in flight waits for its pods to leave the EndpointSlices: no list otherwise.
        draining = spec.drain and rollout is not None and bool(rollout.batch)
        serving = self.kube.ready_endpoint_pods(namespace) if draining else frozenset()
        return Observed(deployment, settings, spec, rollout, pods, self._pod_states(pods, rollout, serving, log),
                        self._migration(namespace, job_name, spec, rollout), job_name, log)

    def _pod_states(self, pods: dict[str, Obj], rollout: Rollout | None, in_endpoints: frozenset[str],
                    log: logging.LoggerAdapter) -> list[PodState]:
        """Agents are asked only where the plan needs them: pods of the batch in flight, and pods
        that do not say yet what they serve."""
        in_batch = set(rollout.batch) if rollout else set()
        states = []
        for pod_name, pod in sorted(pods.items()):
            ready = pod_running(pod)
            serving = annotations_of(pod).get(c.RELEASE)
            view = self._status(pod, log) if ready and (pod_name in in_batch or serving is None) else None
            gate = read_gate(pod)
            states.append(PodState(pod_name, ready, serving, view, gated=gate.gated, gate_open=gate.open,
                                   gate_closed_at=gate.closed_at, in_endpoints=pod_name in in_endpoints))
        return states

    def _migration(self, namespace: str, job_name: str, spec: Spec, rollout: Rollout | None) -> MigrationView | None:
        """The migration Job of the release being rolled out, once it exists (with its log's tail
        when it failed, so the rollout's message says why)."""
        if not (spec.migrate and rollout is not None and rollout.release == spec.release and not rollout.migrated):
            return None
        state = job_state(self.kube.job(namespace, job_name))
        if state is None:
            return None
        outcome, message = state
        if outcome == "failed":
            tail = self.kube.job_log_tail(namespace, job_name)
            message += f"; job {job_name}" + (f"; its output ends: {tail.strip()[-800:]}" if tail
                                               else " (no log could be read)")
        return MigrationView(outcome, message)

    # --- apply ------------------------------------------------------------------------------

    def _apply(self, observed: Observed, actions: Actions) -> None:
        """Carry out the plan in its order: the rollout record is written before any agent is asked."""
        deployment, spec, settings = observed.deployment, observed.spec, observed.settings
        namespace, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        if actions.run_migration:
            self.kube.create_job(job_for(deployment, actions.run_migration, spec.source, spec.migrate or "",
                                         settings.container, settings.code_path, settings.migrate_timeout,
                                         observed.job_name))
        if actions.configmap_release:
            self.kube.write_configmap(namespace, deployment, actions.configmap_release, spec.source)
        for pod_name, release in actions.mark.items():
            self.kube.annotate_pod(namespace, pod_name, {c.RELEASE: release})
            PODS_UPDATED.inc()
        if actions.rollout is not None:
            self.kube.annotate_deployment(namespace, name, {c.ROLLOUT: actions.rollout.to_annotation()})
            self._observe_outcome(observed.rollout, actions.rollout)
        for pod_name, open_ in actions.gates.items():
            self.kube.set_pod_condition(namespace, pod_name, gate_condition(open_, observed.spec.release))
        if actions.ask and not self.may_act():
            # The batch is recorded: the leader finds its pods unasked and asks them, once.
            observed.log.warning("no longer the leader: leaving %d agents to the leader", len(actions.ask))
        else:
            self._ask(observed, actions.ask)
        for event in actions.events:
            observed.log.info("%s: %s", event.reason, event.message)
            self.kube.event(deployment, event.reason, event.message, event.warning)

    def _ask(self, observed: Observed, asks: dict[str, str]) -> None:
        options = observed.settings.restart_options()
        for pod_name, release in asks.items():
            pod = observed.pods[pod_name]
            try:
                self.agents.release(pod["status"]["podIP"], agent_port(pod, self.config.default_agent_port),
                                    ReleaseRequest(release, observed.spec.source, options),
                                    identity=agent_identity(pod))
            except AgentError as err:
                AGENT_ERRORS.inc()
                observed.log.warning("asking pod %s for %s: %s (will look again)", pod_name, release, err)

    def _status(self, pod: dict[str, Any], log: logging.LoggerAdapter) -> AgentStatus | None:
        try:
            return self.agents.status(pod["status"]["podIP"], agent_port(pod, self.config.default_agent_port),
                                      identity=agent_identity(pod))
        except AgentError as err:
            AGENT_ERRORS.inc()
            log.info("pod %s: agent not answering: %s", pod["metadata"]["name"], err)
            return None

    @staticmethod
    def _observe_outcome(before: Rollout | None, after: Rollout) -> None:
        if after.settled and (before is None or before.phase != after.phase or before.release != after.release):
            ROLLOUTS.labels(after.phase).inc()
            if after.started_at:
                DURATION.observe(max(0.0, time.time() - after.started_at))
