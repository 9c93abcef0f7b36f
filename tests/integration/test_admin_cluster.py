"""`cfo-admin install|upgrade|uninstall|preflight` against a real control plane of its own
(a real install registers a webhook configuration that would disturb the shared one)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml

from testbed.controlplane import ROOT, ControlPlane
from testbed.puma_app import MotoS3

pytestmark = pytest.mark.integration

NS = "customer-friendly-system"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    started = ControlPlane(tmp_path_factory.mktemp("admin-plane")).start()
    yield started
    started.stop()


def admin(plane: ControlPlane, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "customer_friendly.admin", *args, "--kubectl",
                           str(plane.kubectl_path)], cwd=ROOT,
                          env={**plane.env(), **(env or {})}, capture_output=True, text=True, timeout=300,
                          check=False)


def can_i(plane: ControlPlane, who: str, *args: str) -> bool:
    result = plane.kubectl("auth", "can-i", *args, f"--as=system:serviceaccount:{NS}:{who}", check=False)
    return result.stdout.strip() == "yes"


def test_preflight_before_install_reports_what_is_missing_then_passes(plane: ControlPlane, tmp_path: Path) -> None:
    moto = MotoS3(tmp_path).start()
    try:
        env = moto.env
        missing = admin(plane, "preflight", env=env)
        assert missing.returncode == 1
        assert "[FAIL] StorageClass efs-sc: not found" in missing.stdout
        assert "[ok ] native sidecars" in missing.stdout and "[ok ] preStop sleep action" in missing.stdout

        aws = {"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": "us-east-1",
               "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        ec2, efs, s3 = boto3.client("ec2", **aws), boto3.client("efs", **aws), boto3.client("s3", **aws)
        vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
        fs_id = efs.create_file_system(CreationToken="cfo")["FileSystemId"]
        efs.create_mount_target(FileSystemId=fs_id, SubnetId=subnet)
        s3.create_bucket(Bucket="acme-releases")
        plane.kubectl("apply", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "efs-sc"},
            "provisioner": "efs.csi.aws.com", "parameters": {"provisioningMode": "efs-ap", "fileSystemId": fs_id}}))
        plane.kubectl("create", "namespace", "shop", check=False)
        plane.kubectl("-n", "shop", "apply", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "annotations": {
                "customer-friendly.dev/enabled": "true", "customer-friendly.dev/release": "v1",
                "customer-friendly.dev/source": "s3://acme-releases/web/{release}.tar.gz"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "puma", "image": "x"}]}}}}), check=False)
        passing = admin(plane, "preflight", env=env)
        assert f"[ok ] EFS {fs_id}: file system exists" in passing.stdout
        assert "[ok ] EFS mount targets: 1 mount target(s)" in passing.stdout
        assert "[ok ] EFS access points: 0 of 1000 used, 3 needed by opted-in pods" in passing.stdout
        assert "[ok ] bucket acme-releases: reachable" in passing.stdout
        assert passing.returncode == 0, passing.stdout
        tight = admin(plane, "preflight", "--access-point-limit", "2", env=env)
        assert tight.returncode == 1 and "[FAIL] EFS access points" in tight.stdout
    finally:
        moto.stop()


def test_install_applies_everything_and_grants_only_what_is_needed(plane: ControlPlane) -> None:
    result = admin(plane, "install")
    assert result.returncode == 0, result.stderr
    for line in ("namespace/customer-friendly-system", "deployment.apps/customer-friendly-webhook",
                 "deployment.apps/customer-friendly-controller",
                 "mutatingwebhookconfiguration.admissionregistration.k8s.io/customer-friendly-operator"):
        assert line in result.stdout
    hook = json.loads(plane.kubectl("get", "mutatingwebhookconfiguration", "customer-friendly-operator", "-o",
                                    "json").stdout)["webhooks"][0]
    ca = base64.b64decode(json.loads(plane.kubectl("-n", NS, "get", "secret", "customer-friendly-ca", "-o",
                                                   "json").stdout)["data"]["tls.crt"])
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca
    policy = json.loads(plane.kubectl("-n", NS, "get", "configmap", "customer-friendly-policy", "-o",
                                      "json").stdout)["data"]
    assert policy["agentClientCA"].encode() == ca

    controller, webhook = "customer-friendly-controller", "customer-friendly-webhook"
    assert can_i(plane, controller, "patch", "deployments", "-n", "shop")
    assert can_i(plane, controller, "patch", "pods", "-n", "shop")
    assert can_i(plane, controller, "create", "configmaps", "-n", "shop")
    for verb in ("list", "watch"):  # the caches: Deployments, pods, release ConfigMaps, cluster-wide
        for resource in ("deployments", "pods", "configmaps"):
            assert can_i(plane, controller, verb, resource, "--all-namespaces")
    assert not can_i(plane, controller, "list", "secrets", "--all-namespaces")
    assert can_i(plane, controller, "update", "leases/customer-friendly-controller", "-n", NS)
    assert can_i(plane, controller, "create", "jobs", "-n", "shop")
    assert not can_i(plane, controller, "delete", "jobs", "-n", "shop")
    assert not can_i(plane, controller, "create", "pods/exec", "-n", "shop")
    assert not can_i(plane, controller, "get", "secrets", "-n", "shop")
    assert not can_i(plane, controller, "get", "secrets", "-n", NS)
    assert not can_i(plane, controller, "delete", "pods", "-n", "shop")
    assert not can_i(plane, controller, "update", "leases/someone-else", "-n", NS)
    assert not can_i(plane, webhook, "get", "deployments", "-n", "shop")
    assert not can_i(plane, webhook, "get", "secrets", "-n", NS)


def test_upgrade_keeps_the_certificates_and_the_edited_policy(plane: ControlPlane) -> None:
    assert admin(plane, "install").returncode == 0
    versions = {name: json.loads(plane.kubectl("-n", NS, "get", "secret", name, "-o", "json").stdout)
                ["metadata"]["resourceVersion"] for name in ("customer-friendly-ca", "customer-friendly-webhook-tls")}
    plane.kubectl("-n", NS, "patch", "configmap", "customer-friendly-policy", "--type=merge", "-p",
                  json.dumps({"data": {"preStopSeconds": "25"}}))
    result = admin(plane, "upgrade")
    assert result.returncode == 0, result.stderr
    after = {name: json.loads(plane.kubectl("-n", NS, "get", "secret", name, "-o", "json").stdout)
             ["metadata"]["resourceVersion"] for name in versions}
    assert after == versions
    policy = json.loads(plane.kubectl("-n", NS, "get", "configmap", "customer-friendly-policy", "-o",
                                      "json").stdout)["data"]
    assert policy["preStopSeconds"] == "25" and policy["agentClientCA"]


def test_a_server_side_dry_run_install_changes_nothing(plane: ControlPlane) -> None:
    result = admin(plane, "install", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "(server dry run)" in result.stdout


def test_uninstall_removes_it_all_and_leaves_deployments_alone(plane: ControlPlane) -> None:
    assert admin(plane, "install").returncode == 0
    result = admin(plane, "uninstall")
    assert result.returncode == 0, result.stderr
    assert plane.kubectl("get", "mutatingwebhookconfiguration", "customer-friendly-operator",
                         check=False).returncode != 0
    assert plane.kubectl("get", "clusterrole", "customer-friendly-controller", check=False).returncode != 0
    namespace = plane.kubectl("get", "namespace", NS, "-o", "json", check=False)
    assert namespace.returncode != 0 or json.loads(namespace.stdout)["status"]["phase"] == "Terminating"
