"""reconcile(namespace, name): read the state, plan with the pure function, apply. Nothing else.

Returns when to look again: soon while a batch is in flight, never when there is nothing to
do (the watch brings the next change).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import Counter, Histogram

import contract as c
from controller.agents import AgentClient, AgentError, agent_identity
from controller.kube import Kube
from controller.migration import job_for, job_state
from controller.plan import COMPLETE, FAILED, ROLLED_BACK, AgentView, MigrationView, PodState, Rollout, Spec, plan
from webhook.config import PolicySource
from webhook.settings import Refusal, opted_in, resolve

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


@dataclass(frozen=True)
class Settings:
    default_agent_port: int = 9443
    batch_deadline_seconds: float = 300.0


def agent_port(pod: dict[str, Any], default: int) -> int:
    spec = pod.get("spec") or {}
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for port in container.get("ports") or []:
            if port.get("name") == c.AGENT_PORT_NAME:
                return int(port["containerPort"])
    return default


def agent_options(settings: Any) -> dict[str, Any]:
    """What a drain or signal restart needs to know, from the Deployment's annotations."""
    if settings.restart in ("phased", "hot"):
        return {}
    options: dict[str, Any] = {"quietSignal": settings.quiet_signal, "drainSeconds": settings.drain_seconds}
    if settings.process:
        options["process"] = settings.process
    return options


ROLE_ORDER = {role: i for i, role in enumerate(c.ROLES)}


def group_state(me: str, annotations: dict[str, str], peers: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(what this Deployment waits for, which peer failed) in its app group, for its wanted release."""
    app, release = annotations.get(c.APP), annotations.get(c.RELEASE)
    if not app:
        return None, None
    my_order = ROLE_ORDER[c.role_of(annotations)]
    waiting, failed = [], None
    for peer in peers:
        meta = peer["metadata"]
        peer_annotations = meta.get("annotations") or {}
        if meta["name"] == me or peer_annotations.get(c.APP) != app or peer_annotations.get(c.ENABLED) != "true":
            continue
        rollout = Rollout.from_annotation(peer_annotations.get(c.ROLLOUT))
        on_release = rollout is not None and rollout.release == release
        if on_release and rollout.phase in (FAILED, ROLLED_BACK):  # type: ignore[union-attr]
            failed = f"{meta['name']} failed: {rollout.reason or rollout.message}"  # type: ignore[union-attr]
        if ROLE_ORDER[c.role_of(peer_annotations)] < my_order and not (
                on_release and rollout.phase == COMPLETE and not rollout.batch):  # type: ignore[union-attr]
            waiting.append(meta["name"])
    block = f"{', '.join(sorted(waiting))} (app {app}) to complete {release}" if waiting else None
    return block, failed


def pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return bool(status.get("podIP")) and status.get("phase") == "Running" and \
        not (pod.get("metadata") or {}).get("deletionTimestamp")


DEFAULT_SETTINGS = Settings()


class Reconciler:
    def __init__(self, kube: Kube, agents: AgentClient, policy: PolicySource,
                 settings: Settings = DEFAULT_SETTINGS) -> None:
        self.kube, self.agents, self.policy, self.settings = kube, agents, policy, settings

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
            canary=settings.canary, paused=settings.paused, auto_rollback=policy.autoRollback,
            retry=annotations.get(c.RETRY), batch_deadline_seconds=self.settings.batch_deadline_seconds,
            migrate=settings.migrate,
        )
        if annotations.get(c.APP):
            block, failure = group_state(name, annotations, self.kube.deployments(namespace))
            spec = replace(spec, group_block=block, group_failure=failure)
        rollout = Rollout.from_annotation(annotations.get(c.ROLLOUT))
        selector = (deployment["spec"].get("selector") or {}).get("matchLabels") or {}
        raw_pods = {p["metadata"]["name"]: p for p in self.kube.pods(namespace, selector)}
        in_batch = set(rollout.batch) if rollout else set()
        states = []
        for pod_name, pod in sorted(raw_pods.items()):
            ready = pod_ready(pod)
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
        for pod_name, release in actions.ask.items():
            pod = raw_pods[pod_name]
            try:
                self.agents.release(pod["status"]["podIP"], agent_port(pod, self.settings.default_agent_port),
                                    release, spec.source, spec.restart, agent_options(settings),
                                    identity=agent_identity(pod))
            except AgentError as err:
                AGENT_ERRORS.inc()
                log.warning("asking pod %s for %s: %s (will look again)", pod_name, release, err)
        for event in actions.events:
            log.info("%s: %s", event.reason, event.message)
            self.kube.event(deployment, event.reason, event.message, event.warning)
        return actions.requeue_seconds

    def _status(self, pod: dict[str, Any], log: logging.LoggerAdapter) -> AgentView | None:
        try:
            return self.agents.status(pod["status"]["podIP"], agent_port(pod, self.settings.default_agent_port),
                                      identity=agent_identity(pod))
        except AgentError as err:
            AGENT_ERRORS.inc()
            log.info("pod %s: agent not answering: %s", pod["metadata"]["name"], err)
            return None

    @staticmethod
    def _observe_outcome(before: Rollout | None, after: Rollout) -> None:
        ended = after.phase in (COMPLETE, ROLLED_BACK) or (after.phase == FAILED and not after.rollingBack)
        if ended and (before is None or before.phase != after.phase or before.release != after.release):
            ROLLOUTS.labels(after.phase).inc()
            if after.startedAt:
                DURATION.observe(max(0.0, time.time() - after.startedAt))
