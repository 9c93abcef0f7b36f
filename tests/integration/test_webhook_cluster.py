"""The webhook, served by gunicorn over TLS, called by a real kube-apiserver."""

from __future__ import annotations

import copy
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from testbed.controlplane import ROOT, ControlPlane
from testbed.webhook import WebhookServer
from tests.integration.conftest import Kube

pytestmark = pytest.mark.integration

FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "deployment.json").read_text())


def deployment(**annotations: str | None) -> dict[str, Any]:
    manifest = copy.deepcopy(FIXTURE)
    for key, value in annotations.items():
        name = "customer-friendly.dev/" + key.replace("_", "-")
        if value is None:
            manifest["metadata"]["annotations"].pop(name, None)
        else:
            manifest["metadata"]["annotations"][name] = value
    return manifest


def names(items: list[dict[str, Any]] | None) -> list[str]:
    return [item["name"] for item in items or []]


def assert_injected_once(pod_spec: dict[str, Any]) -> None:
    assert names(pod_spec["initContainers"]) == ["cfo-fetch", "cfo-agent", "wait-for-db"]
    assert names(pod_spec["containers"]) == ["puma", "log-shipper"]
    assert names(pod_spec["volumes"]).count("cfo-code") == 1
    puma = pod_spec["containers"][0]
    assert [m["mountPath"] for m in puma["volumeMounts"] if m["name"] == "cfo-code"] == ["/app"]
    assert pod_spec["shareProcessNamespace"] is True
    assert pod_spec["initContainers"][1]["restartPolicy"] == "Always"


def test_apply_of_an_opted_in_deployment_comes_back_mutated(kube: Kube) -> None:
    result = kube.apply(deployment())
    assert "deployment.apps/web created" in result.stdout
    live = kube.get("deployment", "web")
    pod = live["spec"]["template"]["spec"]
    assert_injected_once(pod)
    assert pod["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 15}}
    assert pod["terminationGracePeriodSeconds"] == 55
    claim = next(v for v in pod["volumes"] if v["name"] == "cfo-code")["ephemeral"]["volumeClaimTemplate"]
    assert claim["spec"]["storageClassName"] == "efs-sc"
    env = {e["name"]: e for e in pod["initContainers"][0]["env"]}
    assert env["CFO_RELEASE"]["valueFrom"]["configMapKeyRef"] == {
        "name": "web-cfo-release", "key": "release", "optional": True}
    assert env["CFO_RELEASE_DEFAULT"]["value"] == "v41"
    assert env["CFO_SOURCE_DEFAULT"]["value"] == "s3://acme-releases/web/{release}.tar.gz"


def test_a_deployment_that_is_not_opted_in_comes_back_unchanged(kube: Kube) -> None:
    manifest = deployment(enabled=None)
    kube.apply(manifest)
    live = kube.get("deployment", "web")
    # Compare with what the API server makes of the same object with no webhook involved:
    # a server-side dry run in a namespace the webhook configuration excludes would also do,
    # but comparing the user's own fields is direct.
    pod = live["spec"]["template"]["spec"]
    assert names(pod["initContainers"]) == ["wait-for-db"]
    assert names(pod["containers"]) == ["puma", "log-shipper"]
    assert names(pod["volumes"]) == ["secrets"]
    assert "shareProcessNamespace" not in pod
    assert pod["terminationGracePeriodSeconds"] == 30  # the API server's default, not ours
    assert "annotations" not in live["spec"]["template"]["metadata"]


def test_enabled_false_is_admitted_unchanged(kube: Kube) -> None:
    kube.apply(deployment(enabled="false"))
    pod = kube.get("deployment", "web")["spec"]["template"]["spec"]
    assert names(pod["initContainers"]) == ["wait-for-db"]


def test_an_image_update_keeps_the_injection_exactly_once(kube: Kube) -> None:
    kube.apply(deployment())
    updated = deployment()
    updated["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/acme/web-runtime:ruby-3.4"
    kube.apply(updated)
    kube.run("set", "image", "deployment/web", "log-shipper=fluent/fluent-bit:3.1")
    live = kube.get("deployment", "web")
    pod = live["spec"]["template"]["spec"]
    assert_injected_once(pod)
    assert pod["containers"][0]["image"].endswith(":ruby-3.4")
    assert pod["containers"][1]["image"] == "fluent/fluent-bit:3.1"


def test_changing_the_release_annotation_does_not_start_a_native_rollout(kube: Kube) -> None:
    kube.apply(deployment())
    before = kube.get("deployment", "web")
    kube.run("annotate", "deployment/web", "customer-friendly.dev/release=v42", "--overwrite")
    after = kube.get("deployment", "web")
    assert after["metadata"]["annotations"]["customer-friendly.dev/release"] == "v42"
    assert after["spec"]["template"] == before["spec"]["template"]
    # Deployments bump metadata.generation on any annotation change; what matters is that
    # the deployment controller, once it has seen the change, made no new ReplicaSet.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = kube.get("deployment", "web")
        if after.get("status", {}).get("observedGeneration") == after["metadata"]["generation"]:
            break
        time.sleep(0.2)
    assert after["status"]["observedGeneration"] == after["metadata"]["generation"]
    assert after["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert len(kube.get("replicasets", app="web")["items"]) == 1


def test_server_side_dry_run_returns_the_mutation_and_stores_nothing(kube: Kube) -> None:
    result = kube.apply(deployment(), "--dry-run=server", "-o", "json")
    assert_injected_once(json.loads(result.stdout)["spec"]["template"]["spec"])
    missing = kube.run("get", "deployment", "web", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_a_bad_annotation_is_refused_and_kubectl_shows_our_message(kube: Kube) -> None:
    result = kube.apply(deployment(restart="rolling"), check=False)
    assert result.returncode != 0
    assert "denied the request" in result.stderr
    assert "customer-friendly.dev/restart='rolling' is invalid" in result.stderr
    assert "phased (SIGUSR1" in result.stderr
    assert kube.run("get", "deployment", "web", check=False).returncode != 0


def test_a_release_id_that_breaks_the_pattern_is_refused(kube: Kube) -> None:
    result = kube.apply(deployment(release="v42;rm -rf"), check=False)
    assert result.returncode != 0
    assert "customer-friendly.dev/release" in result.stderr


def test_kubectl_shows_our_warnings(kube: Kube) -> None:
    manifest = deployment()
    del manifest["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    result = kube.apply(manifest)
    assert "Warning: container puma has no readinessProbe" in result.stderr


def test_deployments_in_kube_system_are_never_sent_to_the_webhook(cluster: ControlPlane, webhook: WebhookServer,
                                                                  tmp_path: Path) -> None:
    manifest = deployment(release="not a valid id")  # would be refused if it reached us
    manifest["metadata"]["name"] = f"cfo-excluded-{int(time.time())}"
    result = cluster.kubectl("-n", "kube-system", "apply", "--dry-run=server", "-o", "json", "-f", "-",
                             input=json.dumps(manifest))
    pod = json.loads(result.stdout)["spec"]["template"]["spec"]
    assert names(pod["initContainers"]) == ["wait-for-db"]


def test_the_controller_manager_creates_pods_that_carry_the_injection(kube: Kube) -> None:
    kube.apply(deployment())
    deadline = time.monotonic() + 60
    pods: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        pods = kube.get("pods", app="web")["items"]
        if len(pods) == 3:
            break
        time.sleep(0.5)
    assert len(pods) == 3, "the ReplicaSet controller did not create 3 pods"
    for pod in pods:
        assert_injected_once(pod["spec"])
    # The ephemeral-volume controller turns each pod's claim template into a real claim.
    claims: set[str] = set()
    while time.monotonic() < deadline and len(claims) < 3:
        claims = {c["metadata"]["name"] for c in kube.get("pvc")["items"]}
        time.sleep(0.5)
    assert claims == {f"{p['metadata']['name']}-cfo-code" for p in pods}


def test_a_policy_change_is_picked_up_without_a_restart(kube: Kube, policy_dir: Path) -> None:
    (policy_dir / "preStopSeconds").write_text("20")
    try:
        deadline = time.monotonic() + 20
        pre_stop = None
        while time.monotonic() < deadline:
            result = kube.apply(deployment(), "--dry-run=server", "-o", "json")
            puma = json.loads(result.stdout)["spec"]["template"]["spec"]["containers"][0]
            pre_stop = puma["lifecycle"]["preStop"]["sleep"]["seconds"]
            if pre_stop == 20:
                break
            time.sleep(0.5)
        assert pre_stop == 20
        # An invalid edit is refused by the webhook and the last good policy stays in force.
        (policy_dir / "preStopSeconds").write_text("a lot")
        time.sleep(2.5)
        result = kube.apply(deployment(), "--dry-run=server", "-o", "json")
        puma = json.loads(result.stdout)["spec"]["template"]["spec"]["containers"][0]
        assert puma["lifecycle"]["preStop"]["sleep"]["seconds"] == 20
    finally:
        (policy_dir / "preStopSeconds").write_text("15")
        time.sleep(2.5)


def _served_serial(server: WebhookServer) -> int:
    pem = ssl.get_server_certificate(("127.0.0.1", server.port))
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def test_the_webhook_reloads_a_rotated_certificate(webhook: WebhookServer) -> None:
    before = _served_serial(webhook)
    subprocess.run([sys.executable, "-m", "customer_friendly.certs", "ensure", "--out", str(webhook.cert_dir), "--ip",
                    "127.0.0.1",
                    "--dns", "localhost", "--renew-before-days", "400"], check=True, cwd=ROOT, capture_output=True)
    on_disk = x509.load_pem_x509_certificate((webhook.cert_dir / "webhook.crt").read_bytes()).serial_number
    assert on_disk != before
    assert _served_serial(webhook) == on_disk
