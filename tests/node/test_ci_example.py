"""The CI examples' commands, run as a pipeline would run them: examples/ci/release.sh publishes a
real app directory to S3 (moto's, through the standard AWS settings) and releases it with
--wait on the real node. A good release passes the job, a re-run of it changes nothing, and a
release that cannot boot fails the job (the rollout rolls back)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from customer_friendly import contract as c
from testbed.node_app import Sources, WebApp, web_files

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "ci"


def app_directory(root: Path, release: str, broken: bool = False) -> Path:
    """A checkout of the app at one commit: its files, and what a checkout holds beside them."""
    for name, text in {**web_files(release, broken), "log/development.log": "noise\n", ".git/HEAD": "x\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def job_env(app: WebApp, sources: Sources, **variables: str) -> dict[str, str]:
    """A CI job's environment: a kubeconfig, S3 credentials and endpoint, kubectl and the plugin on PATH."""
    env = {**app.node.env(), **sources.moto.env, **variables}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(app.node.control.kubectl_path.parent),
                                   env.get("PATH", "/usr/bin:/bin")])
    return env


def pipeline(app: WebApp, sources: Sources, directory: Path, release: str) -> subprocess.CompletedProcess[str]:
    env = job_env(app, sources, CFO_DEPLOYMENT=app.name, CFO_NAMESPACE=app.namespace,
                  CFO_SOURCE=sources.s3_at(app.namespace), CFO_RELEASE=release, CFO_APP_DIR=str(directory),
                  CFO_TIMEOUT="240")
    return subprocess.run(["sh", str(EXAMPLES / "release.sh")], capture_output=True, text=True, env=env,
                          timeout=400, check=False)


def test_both_ci_examples_run_the_script_this_test_runs() -> None:
    github = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    gitlab = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    steps = [step.get("run", "") for step in github["jobs"]["release"]["steps"]]
    assert "examples/ci/release.sh" in steps
    assert gitlab["release"]["script"] == ["examples/ci/release.sh"]
    for variables in (github["jobs"]["release"]["env"], gitlab["release"]["variables"]):
        assert {"CFO_DEPLOYMENT", "CFO_SOURCE", "CFO_RELEASE"} <= set(variables)
        assert c.RELEASE_PLACEHOLDER in variables["CFO_SOURCE"]


def test_publish_and_release_from_a_pipeline(app: WebApp, sources: Sources, tmp_path: Path) -> None:
    first = pipeline(app, sources, app_directory(tmp_path / "c1", "c1"), "c1")
    assert first.returncode != 0  # published, but no such Deployment yet: the job says so and fails
    assert "published s3://" in first.stdout and f'deployment "{app.name}" not found' in first.stderr
    app.create(app.manifest("c1", sources.s3_at(app.namespace)))
    app.wait_ready(serving="c1")

    good = pipeline(app, sources, app_directory(tmp_path / "c2", "c2"), "c2")
    assert good.returncode == 0, good.stderr
    assert f"Complete: all {app.replicas} running pods serve c2" in good.stderr
    assert {app.agent_status(p)["release"] for p in app.pods()} == {"c2"}
    # Who wrote what, as GitOps tools see it (README, "GitOps"): the release by kubectl-cfo, the
    # rollout record by the controller.
    fields = json.loads(app.kubectl("get", "deployment", app.name, "-o", "json", "--show-managed-fields").stdout)
    owners = {entry["manager"]: json.dumps(entry.get("fieldsV1", {})) for entry in fields["metadata"]["managedFields"]}
    assert f"f:{c.RELEASE}" in owners[c.PLUGIN_FIELD_MANAGER]
    assert f"f:{c.ROLLOUT}" in owners[c.CONTROLLER_FIELD_MANAGER]

    rerun = pipeline(app, sources, app_directory(tmp_path / "c2-again", "c2"), "c2")
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.startswith("unchanged: ") and "Complete" in rerun.stderr

    broken = pipeline(app, sources, app_directory(tmp_path / "c3", "c3", broken=True), "c3")
    assert broken.returncode == 1, broken.stderr
    assert "RolledBack" in broken.stderr or "Failed" in broken.stderr
    assert {app.agent_status(p)["release"] for p in app.pods()} == {"c2"}

    listed = subprocess.run(["kubectl", "cfo", "releases", app.name, "-n", app.namespace], capture_output=True,
                            text=True, env=job_env(app, sources), timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"c1", "c2", "c3"}
    assert f" {app.replicas} " in rows["c2"] and "wanted" in rows["c3"]
