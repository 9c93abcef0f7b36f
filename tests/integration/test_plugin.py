"""`kubectl cfo`, found by kubectl as a plugin on PATH, against the real control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import contract as c
from tests.integration.conftest import REPLICAS, Fleet

pytestmark = pytest.mark.integration


def cfo(fleet: Fleet, *args: str, namespace: bool = True) -> subprocess.CompletedProcess[str]:
    cluster = fleet.kube.cluster
    env = cluster.env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # where kubectl-cfo is installed
    ns = ["-n", fleet.kube.namespace] if namespace else []
    return subprocess.run([str(cluster.kubectl_path), "cfo", *ns, *args], capture_output=True, text=True, env=env,
                          timeout=180, check=False)


def test_release_wait_shows_progress_then_status_history_and_fleet_agree(fleet: Fleet) -> None:
    released = cfo(fleet, "release", "web", "v2", "--wait")
    assert released.returncode == 0, released.stderr
    assert "deployment.apps/web release v2" in released.stdout
    assert f"{REPLICAS}/{REPLICAS} pods on v2" in released.stderr and "Complete:" in released.stderr

    table = cfo(fleet, "status", "web")
    assert table.returncode == 0
    header, *rows = table.stdout.split("\n\n")[0].splitlines()
    assert header.split() == ["POD", "IP", "PHASE", "READY", "RELEASE"]
    assert len(rows) == REPLICAS and all(row.split()[-1] == "v2" for row in rows)
    assert "release v2: Complete (3/3 pods)" in table.stdout

    document = json.loads(cfo(fleet, "status", "web", "-o", "json").stdout)
    assert document["wanted"] == "v2" and document["rollout"]["previous"] == "v1"
    assert {p["release"] for p in document["pods"]} == {"v2"}
    assert yaml.safe_load(cfo(fleet, "status", "web", "-o", "yaml").stdout) == document

    history = cfo(fleet, "history", "web")
    assert "RolloutStarted" in history.stdout and "RolloutComplete" in history.stdout
    assert "release v2 (from v1) started" in history.stdout

    fleet_rows = json.loads(cfo(fleet, "fleet", "-o", "json", namespace=False).stdout)
    ours = next(r for r in fleet_rows if r["namespace"] == fleet.kube.namespace)
    assert ours == {"namespace": fleet.kube.namespace, "deployment": "web", "wanted": "v2", "phase": "Complete",
                    "pods": REPLICAS, "running": {"v2": REPLICAS}}
    assert fleet.kube.namespace in cfo(fleet, "fleet", namespace=False).stdout


def test_rollback_pause_and_resume(fleet: Fleet) -> None:
    assert cfo(fleet, "release", "web", "v2", "--wait").returncode == 0
    back = cfo(fleet, "rollback", "web", "--wait")
    assert back.returncode == 0, back.stderr
    assert "release v1" in back.stdout
    assert set(fleet.pod_releases().values()) == {"v1"}
    assert cfo(fleet, "pause", "web").stdout.strip() == "deployment.apps/web paused"
    assert fleet.deployment()["metadata"]["annotations"][c.PAUSED] == "true"
    assert cfo(fleet, "resume", "web").stdout.strip() == "deployment.apps/web resumed"
    assert fleet.deployment()["metadata"]["annotations"][c.PAUSED] == "false"


def test_a_release_that_rolls_back_exits_non_zero(fleet: Fleet) -> None:
    result = cfo(fleet, "release", "web", "broken", "--wait")
    assert result.returncode == 1
    assert "RolledBack:" in result.stderr and "cannot boot" in result.stderr


def test_errors_go_to_stderr_with_a_non_zero_exit(fleet: Fleet) -> None:
    missing = cfo(fleet, "status", "nope")
    assert missing.returncode == 1 and missing.stdout == ""
    assert 'deployment "nope" not found' in missing.stderr
    bad = cfo(fleet, "release", "web", "../v2")
    assert bad.returncode == 1 and "invalid release id" in bad.stderr
    refused = cfo(fleet, "release", "web", "v2", "--context", "no-such-context")
    assert refused.returncode == 1 and "kubeconfig" in refused.stderr
