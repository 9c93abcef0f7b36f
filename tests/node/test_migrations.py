"""The migration gate on the real node. The Job the controller derives from the Deployment runs
in a real pod from the Deployment's own image, its code volume filled by our init container
with the NEW release; the command is a Ruby script the release carries (`ruby db/migrate.rb`).
Success gates the rollout: while the migration runs no agent is asked (agents count every
request in `asked`) and new pods still start on the old release. A migration that exits
non-zero, or runs past `migrate-timeout`, fails the release with the real pod's log in the
Event and the rollout annotation, and touches no pod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from customer_friendly import contract as c
from testbed.node_app import WebApp, release_tarball, web_files

pytestmark = pytest.mark.node

COMMAND = "ruby db/migrate.rb"
GATE = "/gate"

# Records that it ran (one line per run), then waits for the test to open the gate: the test
# looks at the cluster while the migration is known to be running, not after some sleep.
MIGRATE_WAITS = """$stdout.sync = true
require "socket"
RELEASE = "{release}"
puts "migrate: release #{{RELEASE}} in #{{File.realpath(Dir.pwd)}} on #{{Socket.gethostname}}"
File.open("{gate}/ran-#{{RELEASE}}", "a") {{ |f| f.puts Socket.gethostname }}
sleep 0.2 until File.exist?("{gate}/go-#{{RELEASE}}")
puts "migrate: schema at #{{RELEASE}}"
"""
MIGRATE_FAILS = """$stdout.sync = true
puts "migrate: release {release}: == 20260509 AddTotalToOrders: migrating"
warn 'PG::UndefinedTable: ERROR:  relation "orders" does not exist'
exit 3
"""


def migrating_release(release: str, script: str) -> bytes:
    return release_tarball({**web_files(release), "db/migrate.rb": script.format(release=release, gate=GATE)})


def create(app: WebApp, gate: Path, scripts: dict[str, str], **annotations: str) -> dict[str, Any]:
    """The web app with `migrate` set, its releases in an S3 prefix of its own, and a host
    directory mounted at /gate in its pod template (and so in the migration Job)."""
    sources = app.product.sources
    for release, script in scripts.items():
        sources.publish_at(app.namespace, release, migrating_release(release, script))
    gate.mkdir(parents=True, exist_ok=True)
    deployment = app.manifest("v1", sources.s3_at(app.namespace),
                              annotations={c.MIGRATE: COMMAND, **annotations})
    spec = deployment["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "gate", "hostPath": {"path": str(gate), "type": "Directory"}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "gate", "mountPath": GATE}]
    app.create(deployment)
    app.wait_ready(serving="v1")
    app.wait_rollout("v1", ("Complete",))
    assert app.jobs() == []  # the first release of a Deployment cannot be gated
    return deployment


def untouched(app: WebApp, release: str) -> dict[str, Any]:
    """What shows that no pod was touched for `release`."""
    out: dict[str, Any] = {}
    for pod in app.pods():
        agent = app.agent_status(pod)
        out[pod["metadata"]["name"]] = (app.links(pod), agent["release"], agent["asked"].get(release, 0),
                                        (pod["metadata"].get("annotations") or {}).get(c.RELEASE))
    return out


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    status = pod.get("status") or {}
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    return next(s for s in statuses if s["name"] == name)


def test_a_migration_runs_once_in_a_real_pod_on_the_new_release_before_any_pod_is_asked(
        app: WebApp, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    deployment = create(app, gate, {"v1": MIGRATE_WAITS, "v2": MIGRATE_WAITS})
    uids = app.uids()
    app.kubectl("annotate", "deployment", "web", f"{c.RELEASE}=v2", "--overwrite")
    app.node.wait("the migration to run", lambda: (gate / "ran-v2").is_file(), 120)

    # The migration is running: a real pod of the Job, from the Deployment's image, the new
    # release fetched by our init container; nothing asked of any pod, new pods start on v1.
    job = app.job("web-migrate-v2")
    assert job is not None
    app.node.wait("the kubelet to report the migration's pod Running", lambda: [
        p["status"].get("phase") for p in app.job_pods("web-migrate-v2")] == ["Running"], 60)
    [pod] = app.job_pods("web-migrate-v2")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert [(ct["name"], ct["image"]) for ct in pod["spec"]["containers"]] == [("puma", image)]
    assert container_status(pod, c.FETCH_CONTAINER)["state"]["terminated"]["exitCode"] == 0
    assert c.AGENT_CONTAINER not in [ct["name"] for ct in pod["spec"].get("initContainers", [])]
    assert container_status(pod, "puma")["state"].get("running")
    assert {name: (links, release, asked) for name, (links, release, asked, _) in untouched(app, "v2").items()} \
        == {name: (("releases/v1", None), "v1", 0) for name in uids}
    assert app.configmap_release() == "v1"
    assert app.rollout()["message"] == f"migrating: {COMMAND}"

    (gate / "go-v2").touch()
    app.wait_rollout("v2", ("Complete",), timeout=240)

    log = app.logs(pod["metadata"]["name"], "puma")
    assert "migrate: release v2 in /app/releases/v2" in log and "migrate: schema at v2" in log, log
    assert (gate / "ran-v2").read_text().splitlines() == [pod["metadata"]["name"]]  # run once
    done = app.job("web-migrate-v2")
    assert done is not None and done["metadata"]["uid"] == job["metadata"]["uid"]
    assert done["status"].get("succeeded") == 1 and not done["status"].get("failed")
    assert app.jobs() == ["web-migrate-v2"]
    for pod_state in untouched(app, "v2").values():
        assert pod_state == (("releases/v2", "releases/v1"), "v2", 1, "v2")
    assert app.uids() == uids
    assert set(app.restarts().values()) == {0}
    assert app.configmap_release() == "v2"
    reasons = [reason for reason, _ in app.events()]
    assert "MigrationStarted" in reasons and "MigrationSucceeded" in reasons


@pytest.mark.parametrize("case", ["exits non-zero", "runs past migrate-timeout"])
def test_a_failed_migration_fails_the_release_with_its_log_and_touches_no_pod(app: WebApp, tmp_path: Path,
                                                                             case: str) -> None:
    app.replicas = 2
    gate = tmp_path / "gate"
    failing = case == "exits non-zero"
    create(app, gate, {"v1": MIGRATE_WAITS, "v2": MIGRATE_FAILS if failing else MIGRATE_WAITS},
           **({} if failing else {c.MIGRATE_TIMEOUT: "15"}))
    before, uids = untouched(app, "v2"), app.uids()

    app.kubectl("annotate", "deployment", "web", f"{c.RELEASE}=v2", "--overwrite")
    rollout = app.wait_rollout("v2", ("Failed",), timeout=180)

    [(_, event)] = [(r, m) for r, m in app.events() if r == "MigrationFailed"]
    assert "web-migrate-v2" in rollout["message"] and "no pod was touched" in rollout["message"], rollout
    if failing:
        line = 'PG::UndefinedTable: ERROR:  relation "orders" does not exist'
        assert line in rollout["message"] and line in event, (rollout, event)
        [pod] = app.job_pods("web-migrate-v2")
        assert container_status(pod, "puma")["state"]["terminated"]["exitCode"] == 3
    else:
        assert "the migrate-timeout passed" in rollout["message"] and "the migrate-timeout passed" in event
        # Stopped: the Job controller deletes its pod, the kubelet stops its container, and the
        # Job is Failed for its deadline.
        def stopped() -> bool:
            job = app.job("web-migrate-v2") or {}
            conditions = (job.get("status") or {}).get("conditions") or []
            return app.job_pods("web-migrate-v2") == [] and any(
                cond["type"] == "Failed" and cond["status"] == "True" and cond.get("reason") == "DeadlineExceeded"
                for cond in conditions)

        app.node.wait("the migration's pod to be stopped and its Job Failed", stopped, 90)
        assert (gate / "ran-v2").read_text().splitlines()  # it did run, and was stopped
        assert not (gate / "go-v2").exists()
    assert untouched(app, "v2") == before
    assert app.uids() == uids
    assert set(app.restarts().values()) == {0}
    assert app.configmap_release() == "v1"
    print(f"\nmigration that {case}: {rollout['message'][:300]}")
