"""Any failure during a release leaves `current`, `previous` and the agent's reported release
exactly as they were, on real pods: a release that cannot be fetched, an archive that is
refused, a release that cannot boot (stopped at the canary and rolled back under load with 0
failed requests), and an agent that is not allowed to signal Puma."""

from __future__ import annotations

import io
import tarfile
import time
from typing import Any

import pytest

from customer_friendly import contract as c
from testbed import images
from testbed.load import Load
from testbed.node_app import WebApp

pytestmark = pytest.mark.node


def evil_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escaped")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    return buf.getvalue()


def state(app: WebApp) -> dict[str, tuple[Any, ...]]:
    """What each pod serves: its volume's links and what its agent reports."""
    out = {}
    for pod in app.pods():
        agent = app.agent_status(pod)
        out[pod["metadata"]["name"]] = (*app.links(pod), agent["release"], agent["previous"])
    return out


@pytest.mark.parametrize(("release", "expected"), [
    ("v404", "not found"),
    ("evil", "'..'"),
])
def test_a_release_that_cannot_be_fetched_or_installed_changes_nothing(app: WebApp, release: str,
                                                                        expected: str) -> None:
    app.product.sources.publish("evil", evil_archive())
    app.replicas = 2
    app.deploy("v1")
    before = state(app)
    app.kubectl("annotate", "deployment", "web", f"{c.RELEASE}={release}", "--overwrite")
    rollout = app.wait_rollout(release, ("Failed", "RolledBack"))
    assert expected in rollout["message"], rollout
    assert state(app) == before
    assert set(app.restarts().values()) == {0}


def test_an_unbootable_release_is_stopped_at_the_canary_and_rolled_back_with_nothing_dropped(app: WebApp) -> None:
    app.deploy("v1")
    before, uids = state(app), app.uids()
    load = Load(app.cluster_ip(), 80, rate=100).start()
    time.sleep(1)
    result = app.cfo("release", "web", "broken", "--wait", "--timeout", "240")
    time.sleep(2)
    load.stop()
    assert result.returncode != 0
    rollout = app.rollout()
    assert rollout["phase"] == "RolledBack", rollout
    assert "cannot boot" in rollout["message"] or "restart" in rollout["message"], rollout
    failed = load.failures()
    assert not failed, f"{len(failed)} of {len(load.samples)} failed: {failed[:3]}"
    assert {s.body.split()[0] for s in load.samples[-50:]} == {"v1"}
    assert state(app) == before
    assert app.uids() == uids
    assert set(app.restarts().values()) == {0}


def test_an_agent_that_may_not_signal_puma_fails_before_anything_moves(app: WebApp) -> None:
    """The annotation names a container whose uid (1000) the agent takes, but Puma really runs
    as root in another container: the agent cannot signal it, and says so before `current` moves."""
    app.replicas = 1
    deployment = app.manifest("v1", app.product.sources.s3(), annotations={c.CONTAINER: "shell"})
    spec = deployment["spec"]["template"]["spec"]
    spec["containers"][0]["volumeMounts"] = [{"name": c.CODE_VOLUME, "mountPath": "/app"}]
    spec["containers"].append({"name": "shell", "image": images.APP_IMAGE_ROOT, "imagePullPolicy": "Never",
                               "command": ["sleep", "infinity"], "securityContext": {"runAsUser": 1000}})
    app.create(deployment)
    app.wait_ready(serving="v1")
    app.wait_rollout("v1", ("Complete",))
    before = state(app)
    app.kubectl("annotate", "deployment", "web", f"{c.RELEASE}=v2", "--overwrite")
    rollout = app.wait_rollout("v2", ("Failed", "RolledBack"))
    assert "not allowed to signal" in rollout["message"], rollout
    assert state(app) == before
