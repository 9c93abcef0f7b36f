"""The install manifests and `cfo-certs --secrets` against the real API server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
import yaml
from cryptography import x509

from testbed.controlplane import ROOT, ControlPlane

pytestmark = pytest.mark.integration

NAMESPACE = "customer-friendly-system"


def ensure_namespace(cluster: ControlPlane) -> None:
    if cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", NAMESPACE)


def test_the_install_manifests_are_accepted_by_the_api_server(cluster: ControlPlane) -> None:
    ensure_namespace(cluster)
    result = cluster.kubectl("apply", "-k", str(ROOT / "manifests" / "base"), "--dry-run=server")
    for kind in ("namespace/customer-friendly-system", "serviceaccount/customer-friendly-webhook",
                 "configmap/customer-friendly-policy", "service/customer-friendly-webhook",
                 "deployment.apps/customer-friendly-webhook",
                 "poddisruptionbudget.policy/customer-friendly-webhook",
                 "mutatingwebhookconfiguration.admissionregistration.k8s.io/customer-friendly-operator",
                 "serviceaccount/customer-friendly-controller", "deployment.apps/customer-friendly-controller",
                 "clusterrole.rbac.authorization.k8s.io/customer-friendly-controller",
                 "role.rbac.authorization.k8s.io/customer-friendly-controller-lease"):
        assert kind in result.stdout


def test_no_role_grants_pods_exec_or_secrets(cluster: ControlPlane) -> None:
    rendered = cluster.kubectl("kustomize", str(ROOT / "manifests" / "base")).stdout
    for doc in yaml.safe_load_all(rendered):
        for rule in (doc or {}).get("rules", []) if doc and doc["kind"] in ("ClusterRole", "Role") else []:
            assert "pods/exec" not in rule.get("resources", [])
            assert "secrets" not in rule.get("resources", [])
            assert "*" not in rule.get("verbs", []) and "*" not in rule.get("resources", [])


def cfo_certs(cluster: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "customer_friendly.certs", *args], cwd=ROOT, env=cluster.env(),
                          capture_output=True, text=True, check=True)


def secret(cluster: ControlPlane, name: str) -> dict:
    return json.loads(cluster.kubectl("-n", NAMESPACE, "get", "secret", name, "-o", "json").stdout)


def test_cfo_certs_writes_secrets_keeps_them_and_prints_the_ca_bundle(cluster: ControlPlane) -> None:
    ensure_namespace(cluster)
    first = cfo_certs(cluster, "ensure", "--secrets", "--namespace", NAMESPACE, "--print-ca-bundle")
    names = ("customer-friendly-ca", "customer-friendly-webhook-tls", "customer-friendly-controller-tls")
    versions = {name: secret(cluster, name)["metadata"]["resourceVersion"] for name in names}
    webhook = secret(cluster, "customer-friendly-webhook-tls")
    assert webhook["type"] == "kubernetes.io/tls"
    assert base64.b64decode(webhook["data"]["ca.crt"]) == base64.b64decode(first.stdout.strip())
    cert = x509.load_pem_x509_certificate(base64.b64decode(webhook["data"]["tls.crt"]))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "customer-friendly-webhook.customer-friendly-system.svc" in san.get_values_for_type(x509.DNSName)
    # The webhook's and the controller's Secrets never carry the CA's key.
    assert set(webhook["data"]) == {"tls.crt", "tls.key", "ca.crt"}

    second = cfo_certs(cluster, "ensure", "--secrets", "--namespace", NAMESPACE)
    assert "keep" in second.stderr
    assert {name: secret(cluster, name)["metadata"]["resourceVersion"] for name in names} == versions
    bundle = cfo_certs(cluster, "ca-bundle", "--secrets", "--namespace", NAMESPACE)
    assert bundle.stdout.strip() == first.stdout.strip()

    renewed = cfo_certs(cluster, "ensure", "--secrets", "--namespace", NAMESPACE, "--renew-before-days", "400")
    assert "renew" in renewed.stderr
    assert secret(cluster, "customer-friendly-ca")["metadata"]["resourceVersion"] == versions["customer-friendly-ca"]
    assert secret(cluster, "customer-friendly-webhook-tls")["metadata"]["resourceVersion"] != versions[
        "customer-friendly-webhook-tls"]


def test_the_cert_manager_overlay_issues_both_leaves_and_injects_the_ca(cluster: ControlPlane) -> None:
    rendered = cluster.kubectl("kustomize", str(ROOT / "manifests" / "overlays" / "cert-manager")).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    secrets = {d["spec"]["secretName"] for d in docs if d["kind"] == "Certificate"}
    assert secrets == {"customer-friendly-ca", "customer-friendly-webhook-tls", "customer-friendly-controller-tls"}
    hook = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    assert hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
        "customer-friendly-system/customer-friendly-webhook"
