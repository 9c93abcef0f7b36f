"""reconcile(namespace, name): read the state, plan with the pure function, apply. Nothing else.

Returns when to look again: soon while a batch is in flight, never when there is nothing to
do (the watch brings the next change).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from prometheus_client import Counter, Histogram

from customer_friendly import contract as c
from customer_friendly.contract import groups
from customer_friendly.contract.agent_api import AgentStatus, ReleaseRequest
from customer_friendly.contract.objects import pod_running, pod_selector
from customer_friendly.contract.policy_source import PolicySource
from customer_friendly.contract.rollout import Rollout
from customer_friendly.contract.settings import Refusal, opted_in, resolve
from customer_friendly.controller.agents import AgentClient, AgentError, agent_identity
from customer_friendly.controller.config import ControllerConfig
from customer_friendly.controller.kube import Kube
from customer_friendly.controller.migration import job_for, job_state
from customer_friendly.controller.plan import MigrationView, PodState, Spec, plan

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


class Reconciler:
    def __init__(self, kube: Kube, agents: AgentClient, policy: PolicySource,
                 config: ControllerConfig = DEFAULT_CONFIG) -> None:
        self.kube, self.agents, self.policy, self.config = kube, agents, policy, config

    def reconcile(self, namespace: str, name: str) -> float | None:
        deployment = self.kube.deployment(namespace, name)
        if deployment is None:
            return None
        annotations = deployment["metadata"].get("annotations") or {}
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
        spec = Spec(
            release=settings.release, source=settings.source, restart=settings.restart,
            replicas=int(deployment["spec"].get("replicas") or 1), max_unavailable=settings.max_unavailable,
            canary=settings.canary, paused=settings.paused, auto_rollback=policy.auto_rollback,
            retry=annotations.get(c.RETRY), batch_deadline_seconds=self.config.batch_deadline_seconds,
            migrate=settings.migrate,
        )
        if annotations.get(c.APP):
            gate = groups.gate(deployment, self.kube.deployments(namespace))
            spec = replace(spec, group_block=gate.waiting_for, group_failure=gate.failed)
        rollout = Rollout.from_annotation(annotations.get(c.ROLLOUT))
        raw_pods = {p["metadata"]["name"]: p for p in self.kube.pods(namespace, pod_selector(deployment))}
        in_batch = set(rollout.batch) if rollout else set()
        states = []
        for pod_name, pod in sorted(raw_pods.items()):
            ready = pod_running(pod)
            serving = (pod["metadata"].get("annotations") or {}).get(c.RELEASE)
            view = None
            if ready and (pod_name in in_batch or serving is None):
                view = self._status(pod, log)
            states.append(PodState(pod_name, ready, serving, view))
        job_name = c.migration_job_name(name, spec.release + (f"-{spec.retry}" if spec.retry else ""))
        migration = None
        if spec.migrate and rollout is not None and rollout.release == spec.release and not rollout.migrated:
            state = job_state(self.kube.job(namespace, job_name))
            if state is not None:
                message = state[1]
                if state[0] == "failed":
                    tail = self.kube.job_log_tail(namespace, job_name)
                    message += f"; job {job_name}" + (f"; its output ends: {tail.strip()[-800:]}" if tail
                                                       else " (no log could be read)")
                migration = MigrationView(state[0], message)
        actions = plan(spec, rollout, self.kube.configmap_release(namespace, name), states, time.time(), migration)

        if actions.run_migration:
            self.kube.create_job(job_for(deployment, actions.run_migration, spec.source, spec.migrate or "",
                                         settings.container, settings.code_path, settings.migrate_timeout, job_name))
        if actions.configmap_release:
            self.kube.write_configmap(namespace, deployment, actions.configmap_release, spec.source)
        for pod_name, release in actions.mark.items():
            self.kube.annotate_pod(namespace, pod_name, {c.RELEASE: release})
            PODS_UPDATED.inc()
        if actions.rollout is not None:
            self.kube.annotate_deployment(namespace, name, {c.ROLLOUT: actions.rollout.to_annotation()})
            self._observe_outcome(rollout, actions.rollout)
        options = settings.restart_options()
        for pod_name, release in actions.ask.items():
            pod = raw_pods[pod_name]
            try:
                self.agents.release(pod["status"]["podIP"], agent_port(pod, self.config.default_agent_port),
                                    ReleaseRequest(release, spec.source, options), identity=agent_identity(pod))
            except AgentError as err:
                AGENT_ERRORS.inc()
                log.warning("asking pod %s for %s: %s (will look again)", pod_name, release, err)
        for event in actions.events:
            log.info("%s: %s", event.reason, event.message)
            self.kube.event(deployment, event.reason, event.message, event.warning)
        return actions.requeue_seconds

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
