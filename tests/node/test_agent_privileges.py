"""The agent signals Puma in another container of the pod with the least privilege that really
works on a kubelet, asserted from the running pods: their security contexts and the new worker
PIDs that answer after a phased release. A namespace enforcing PodSecurity `restricted` learns
at `kubectl apply` what could not work, never at release time."""

from __future__ import annotations

import time
from typing import Any

import pytest

from customer_friendly import contract as c
from testbed import images
from testbed.load import Load
from testbed.node_app import WebApp

pytestmark = pytest.mark.node

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}
RESTRICTED_APP = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                  "seccompProfile": {"type": "RuntimeDefault"}}


def answers(app: WebApp, count: int = 40) -> set[tuple[str, str]]:
    """(release, worker pid) pairs seen through the ClusterIP."""
    load = Load(app.cluster_ip(), 80, rate=100).start()
    time.sleep(count / 100)
    load.stop()
    assert not load.failures(), load.failures()[:3]
    return {(words[0], words[1]) for s in load.samples if len(words := s.body.split()) >= 2}


def security(pod: dict[str, Any], name: str) -> dict[str, Any]:
    containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    return next(ct for ct in containers if ct["name"] == name).get("securityContext") or {}


def release_and_check_workers(app: WebApp, release: str) -> None:
    before = answers(app)
    assert {r for r, _ in before} == {"v1"}
    result = app.cfo("release", "web", release, "--wait", "--timeout", "180")
    assert result.returncode == 0, result.stdout + result.stderr + app.controller_log()
    after = answers(app)
    assert {r for r, _ in after} == {release}
    # Every worker that answers now is a new process: Puma really was signalled.
    assert not {pid for _, pid in before} & {pid for _, pid in after}
    assert set(app.restarts().values()) == {0}


@pytest.mark.parametrize(("case", "image", "container_security", "pod_security", "agent_user", "agent_caps"), [
    ("app runs as root", images.APP_IMAGE_ROOT, None, None, 0, ["KILL"]),
    ("non-root uid in the pod spec", images.APP_IMAGE_ROOT, None, {"runAsUser": 1000, "runAsGroup": 1000,
                                                                    "fsGroup": 1000}, 1000, None),
    ("non-root USER only in the image", images.APP_IMAGE_USER, None, None, 0, ["KILL"]),
])
def test_the_agent_signals_puma_with_the_least_privilege_that_works(
        app: WebApp, case: str, image: str, container_security: dict[str, Any] | None,
        pod_security: dict[str, Any] | None, agent_user: int, agent_caps: list[str] | None) -> None:
    app.replicas = 1
    created = app.create(app.manifest("v1", app.product.sources.s3(), image=image,
                                      container_security=container_security, pod_security=pod_security))
    if agent_user == 0:
        assert "the agent runs as root with only CAP_KILL" in created.stderr
    pod = app.wait_ready(serving="v1")[0]
    agent = security(pod, c.AGENT_CONTAINER)
    assert agent["runAsUser"] == agent_user
    assert agent["capabilities"].get("add") == agent_caps
    assert agent["capabilities"]["drop"] == ["ALL"]
    assert agent["allowPrivilegeEscalation"] is False
    assert security(pod, c.FETCH_CONTAINER).get("capabilities", {}).get("add") is None
    release_and_check_workers(app, "v2")


def test_a_restricted_namespace_refuses_at_apply_what_could_not_work_and_runs_what_can(app: WebApp) -> None:
    app.replicas = 1
    unknown_uid = app.manifest("v1", app.product.sources.s3(), image=images.APP_IMAGE_USER,
                               container_security=RESTRICTED_APP)
    app.prepare(labels=RESTRICTED)
    result = app.apply(unknown_uid, check=False)
    assert result.returncode != 0
    assert "sets runAsNonRoot but no runAsUser" in result.stderr
    assert "set securityContext.runAsUser" in result.stderr

    known_uid = app.manifest("v1", app.product.sources.s3(), image=images.APP_IMAGE_USER,
                             container_security={**RESTRICTED_APP, "runAsUser": 1000},
                             pod_security={"fsGroup": 1000})
    created = app.apply(known_uid)
    assert "violate PodSecurity" not in created.stderr, created.stderr
    pod = app.wait_ready(serving="v1")[0]
    agent = security(pod, c.AGENT_CONTAINER)
    assert (agent["runAsUser"], agent["runAsNonRoot"], agent["capabilities"]) == (1000, True, {"drop": ["ALL"]})
    release_and_check_workers(app, "v2")
