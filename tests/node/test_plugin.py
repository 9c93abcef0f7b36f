"""`kubectl cfo`, found by kubectl as a plugin on PATH, against real pods on the real node."""

from __future__ import annotations

import json

import pytest
import yaml

from customer_friendly import contract as c
from testbed.node_app import WebApp

pytestmark = pytest.mark.node

REPLICAS = 3


def releases(app: WebApp) -> set[str | None]:
    return {(p["metadata"].get("annotations") or {}).get(c.RELEASE) for p in app.pods()}


def test_release_wait_shows_progress_then_status_history_and_fleet_agree(app: WebApp) -> None:
    app.deploy("v1")
    released = app.cfo("release", "web", "v2", "--wait")
    assert released.returncode == 0, released.stderr
    assert "deployment.apps/web release v2" in released.stdout
    assert f"{REPLICAS}/{REPLICAS} pods on v2" in released.stderr and "Complete:" in released.stderr

    table = app.cfo("status", "web")
    assert table.returncode == 0
    header, *rows = table.stdout.split("\n\n")[0].splitlines()
    assert header.split() == ["POD", "IP", "PHASE", "READY", "RELEASE"]
    assert len(rows) == REPLICAS and all(row.split()[-1] == "v2" for row in rows)
    assert f"release v2: Complete ({REPLICAS}/{REPLICAS} pods)" in table.stdout

    document = json.loads(app.cfo("status", "web", "-o", "json").stdout)
    assert document["wanted"] == "v2" and document["rollout"]["previous"] == "v1"
    assert {p["release"] for p in document["pods"]} == {"v2"}
    assert yaml.safe_load(app.cfo("status", "web", "-o", "yaml").stdout) == document

    history = app.cfo("history", "web")
    assert "RolloutStarted" in history.stdout and "RolloutComplete" in history.stdout
    assert "release v2 (from v1) started" in history.stdout

    fleet = json.loads(app.cfo("fleet", "-o", "json", namespaced=False).stdout)
    ours = next(r for r in fleet if r["namespace"] == app.namespace)
    assert ours == {"namespace": app.namespace, "deployment": "web", "wanted": "v2", "phase": "Complete",
                    "pods": REPLICAS, "running": {"v2": REPLICAS}}
    assert app.namespace in app.cfo("fleet", namespaced=False).stdout


def test_rollback_pause_and_resume(app: WebApp) -> None:
    app.deploy("v1")
    assert app.cfo("release", "web", "v2", "--wait").returncode == 0
    back = app.cfo("rollback", "web", "--wait")
    assert back.returncode == 0, back.stderr
    assert "release v1" in back.stdout
    assert releases(app) == {"v1"}
    assert {app.agent_status(p)["release"] for p in app.pods()} == {"v1"}
    assert app.cfo("pause", "web").stdout.strip() == "deployment.apps/web paused"
    assert app.deployment()["metadata"]["annotations"][c.PAUSED] == "true"
    assert app.cfo("resume", "web").stdout.strip() == "deployment.apps/web resumed"
    assert app.deployment()["metadata"]["annotations"][c.PAUSED] == "false"


def test_a_release_that_rolls_back_exits_non_zero_and_errors_go_to_stderr(app: WebApp) -> None:
    app.deploy("v1")
    result = app.cfo("release", "web", "broken", "--wait")
    assert result.returncode == 1
    assert "RolledBack:" in result.stderr and "cannot boot" in result.stderr

    missing = app.cfo("status", "nope")
    assert missing.returncode == 1 and missing.stdout == ""
    assert 'deployment "nope" not found' in missing.stderr
    bad = app.cfo("release", "web", "../v2")
    assert bad.returncode == 1 and "invalid release id" in bad.stderr
    refused = app.cfo("release", "web", "v2", "--context", "no-such-context")
    assert refused.returncode == 1 and "kubeconfig" in refused.stderr
