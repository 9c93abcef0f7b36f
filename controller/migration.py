"""The migration Job of a release, derived from the Deployment's own pod template. Pure.

Same image, env, service account and pull secrets as the app; the injected fetch step puts
the NEW release on an emptyDir code volume; the app container runs the command in
`<code-path>/current`. Nothing else of the pod comes along: no agent, no probes, no other
containers (a log shipper would keep the Job running forever), and labels that no
Deployment selects.
"""

from __future__ import annotations

import copy

from customer_friendly import contract as c
from customer_friendly.contract.agent_api import AgentEnv
from customer_friendly.contract.objects import Obj

KEEP_FINISHED_SECONDS = 24 * 3600
"""A finished Job (and its pod's log) stays this long for inspection."""


def job_for(deployment: Obj, release: str, source: str, command: str, container: str, code_path: str,
            timeout_seconds: int, name: str) -> Obj:
    meta = deployment["metadata"]
    template = copy.deepcopy(deployment["spec"]["template"])
    pod = template["spec"]
    pod.pop("shareProcessNamespace", None)
    pod["restartPolicy"] = "Never"
    pod["volumes"] = [v for v in pod.get("volumes") or [] if v.get("name") != c.CODE_VOLUME] + [
        {"name": c.CODE_VOLUME, "emptyDir": {}}]
    fetch = next(ct for ct in pod.get("initContainers") or [] if ct.get("name") == c.FETCH_CONTAINER)
    pinned = {AgentEnv.RELEASE: release, AgentEnv.SOURCE: source}
    fetch["env"] = [e for e in fetch.get("env") or [] if e["name"] not in pinned] + [
        {"name": k, "value": v} for k, v in pinned.items()]
    pod["initContainers"] = [fetch] + [ct for ct in pod.get("initContainers") or []
                                       if ct.get("name") not in (c.FETCH_CONTAINER, c.AGENT_CONTAINER)]
    app = next(ct for ct in pod["containers"] if ct.get("name") == container)
    for key in ("readinessProbe", "livenessProbe", "startupProbe", "lifecycle", "ports", "args"):
        app.pop(key, None)
    app["command"] = ["/bin/sh", "-c", command]
    app["workingDir"] = f"{code_path}/current"
    pod["containers"] = [app]
    template["metadata"] = {"labels": {"customer-friendly.dev/migration": meta["name"]},
                            "annotations": {c.RELEASE: release}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name, "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "customer-friendly-operator",
                       "customer-friendly.dev/migration": meta["name"]},
            "annotations": {c.RELEASE: release, c.MIGRATE: command},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                 "uid": meta["uid"], "controller": False}],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": timeout_seconds,
            "ttlSecondsAfterFinished": KEEP_FINISHED_SECONDS,
            "template": template,
        },
    }


def job_state(job: Obj | None) -> tuple[str, str] | None:
    """(running|succeeded|failed, message) from a Job's status, or None when there is no Job."""
    if job is None:
        return None
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded", ""
        if condition.get("type") in ("Failed", "FailureTarget"):
            reason = condition.get("reason") or "Failed"
            text = {"DeadlineExceeded": "the migrate-timeout passed"}.get(reason, condition.get("message") or reason)
            return "failed", text
    return "running", ""
