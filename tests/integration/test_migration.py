"""The migration gate against the real control plane: the real Job controller tracks the Job.

With no kubelet, the test plays the kubelet's part only: it marks the Job's pod Succeeded or
Failed through the status subresource.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import contract as c
from tests.integration.conftest import Fleet

pytestmark = pytest.mark.integration

COMMAND = "bin/rails db:migrate"


def wait_for(fetch: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def job(fleet: Fleet, name: str) -> dict[str, Any] | None:
    result = fleet.kube.run("get", "job", name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def finish_job_pod(fleet: Fleet, job_name: str, phase: str) -> None:
    """Play the kubelet: the Job's pod ran and ended with `phase`."""
    pods = wait_for(lambda: fleet.kube.get("pods", **{"job-name": job_name})["items"])
    status = {"status": {"phase": phase, "containerStatuses": [{
        "name": "puma", "ready": False, "restartCount": 0, "image": "acme/web-runtime:ruby-3.3", "imageID": "",
        "state": {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                                 "reason": "Completed" if phase == "Succeeded" else "Error"}}}]}}
    fleet.kube.run("patch", "pod", pods[0]["metadata"]["name"], "--subresource=status", "--type=merge", "-p",
                   json.dumps(status))


def asked(fleet: Fleet, release: str) -> int:
    return sum(fleet.agent(name)["asked"].get(release, 0) for name in fleet.kubelet.started)


def test_a_migration_runs_as_a_job_on_the_new_release_before_any_pod_moves(fleet: Fleet) -> None:
    fleet.annotate(migrate=COMMAND, release="v2")
    created = wait_for(lambda: job(fleet, "web-migrate-v2"))
    spec = created["spec"]["template"]["spec"]
    app = spec["containers"][0]
    assert [ct["name"] for ct in spec["containers"]] == ["puma"]
    assert app["command"] == ["/bin/sh", "-c", COMMAND] and app["workingDir"] == "/app/current"
    assert app["image"] == "acme/web-runtime:ruby-3.3"
    fetch_env = {e["name"]: e.get("value") for e in spec["initContainers"][0]["env"]}
    assert fetch_env["CFO_RELEASE"] == "v2"
    assert c.AGENT_CONTAINER not in [ct["name"] for ct in spec["initContainers"]]
    assert created["spec"]["backoffLimit"] == 0 and created["spec"]["ttlSecondsAfterFinished"] > 0
    time.sleep(1)
    assert asked(fleet, "v2") == 0
    assert fleet.kube.get("configmap", "web-cfo-release")["data"]["release"] == "v1"

    finish_job_pod(fleet, "web-migrate-v2", "Succeeded")
    fleet.wait_rollout("v2", ("Complete",))
    assert set(fleet.pod_releases().values()) == {"v2"}
    assert "MigrationStarted" in fleet.events() and "MigrationSucceeded" in fleet.events()
    assert job(fleet, "web-migrate-v2")["metadata"]["uid"] == created["metadata"]["uid"]  # run once


def test_a_failing_migration_fails_the_release_and_no_pod_is_touched(fleet: Fleet) -> None:
    fleet.annotate(migrate=COMMAND, release="v3")
    wait_for(lambda: job(fleet, "web-migrate-v3"))
    finish_job_pod(fleet, "web-migrate-v3", "Failed")
    rollout = fleet.wait_rollout("v3", ("Failed",))
    assert "migration failed" in rollout["reason"] and "web-migrate-v3" in rollout["reason"]
    assert asked(fleet, "v3") == 0
    assert set(fleet.pod_releases().values()) == {"v1"}
    assert all(fleet.served(name) == "v1" for name in fleet.kubelet.started)
    assert fleet.kube.get("configmap", "web-cfo-release")["data"]["release"] == "v1"
    assert "MigrationFailed" in fleet.events()
