"""The Helm chart (charts/customer-friendly-operator) against what it stands for: `helm lint`, and
`helm template` compared object by object with kustomize's render of manifests/base (after the
values `cfo-admin install` fills in) and of manifests/overlays/cert-manager, with the few
differences Helm brings listed here. Also the values, the monitoring files and `helm package`.

No cluster is needed: helm renders offline, and `kubectl kustomize` is kubectl's own kustomize.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from customer_friendly.admin.install import Installer, fill_in
from customer_friendly.certs.cli import leaf_specs
from customer_friendly.certs.identity import client_refusal
from customer_friendly.certs.names import CONTROLLER_CN
from customer_friendly.certs.store import CA, secret_name
from testbed.chart import CHART, Helm, by_key, helm_binary, without_labels
from testbed.controlplane import ROOT, binaries

pytestmark = pytest.mark.integration

NS = "customer-friendly-system"
MANIFESTS = ROOT / "manifests"

# The only differences allowed between the chart's render and kustomize's:
CHART_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance")
"""Helm's labels, on every object the chart renders (never in selectors or pod templates)."""
NAMESPACE = ("Namespace", "", NS)
"""Only in kustomize's render by default: Helm keeps its release record in the release namespace,
so that namespace exists before the install (`namespace.create=true` renders it, checked below)."""
BOOTSTRAP_SECRETS = {("Secret", NS, secret_name(name)) for name in (CA, "webhook", "controller")}
"""Only in the chart's render: what `cfo-admin install` writes through the API rather than in a
manifest (certs/store.py's SecretStore); checked against cfo-certs' certificates below."""


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm"), dict(os.environ))


def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries() / "kubectl"), *args], input=input, capture_output=True, text=True,
                          check=check, timeout=120)


def kustomize(path: Path) -> list[dict[str, Any]]:
    """The render `cfo-admin install` starts from (admin/install.py)."""
    return Installer(kubectl, None).render(path)


def assert_same_objects(chart: list[dict[str, Any]], kustomized: list[dict[str, Any]],
                        only_in_chart: set[Any], only_in_kustomize: set[Any]) -> None:
    ours, theirs = by_key(chart), by_key(kustomized)
    assert set(ours) - set(theirs) == only_in_chart
    assert set(theirs) - set(ours) == only_in_kustomize
    for key in sorted(set(ours) & set(theirs)):
        labels = ours[key]["metadata"].get("labels") or {}
        assert all(name in labels for name in CHART_LABELS), key
        assert without_labels(ours[key], CHART_LABELS) == theirs[key], key


def ca_pem_of(chart: list[dict[str, Any]]) -> bytes:
    secret = by_key(chart)[("Secret", NS, secret_name(CA))]
    return base64.b64decode(secret["data"]["ca.crt"])


@pytest.mark.parametrize("values", [
    [],
    ["--set", "certManager.enabled=true"],
    ["--set", "monitoring.serviceMonitor.enabled=true", "--set", "monitoring.prometheusRule.enabled=true"],
    ["--set", "certManager.enabled=true", "--set", "monitoring.serviceMonitor.enabled=true",
     "--set", "monitoring.prometheusRule.enabled=true", "--set", "namespace.create=true"],
], ids=["defaults", "cert-manager", "monitoring", "all-on"])
def test_helm_lint_passes(helm: Helm, values: list[str]) -> None:
    result = helm.run("lint", str(CHART), "--strict", *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


def test_default_render_is_manifests_base_as_cfo_admin_fills_it_in(helm: Helm) -> None:
    chart = helm.template(NS)
    base = fill_in(kustomize(MANIFESTS / "base"), ca_pem_of(chart), keep_policy=False)
    assert_same_objects(chart, base, only_in_chart=BOOTSTRAP_SECRETS, only_in_kustomize={NAMESPACE})


def test_namespace_create_renders_base_namespace(helm: Helm) -> None:
    chart = helm.template(NS, "--set", "namespace.create=true")
    base = fill_in(kustomize(MANIFESTS / "base"), ca_pem_of(chart), keep_policy=False)
    assert_same_objects(chart, base, only_in_chart=BOOTSTRAP_SECRETS, only_in_kustomize=set())


def test_bootstrapped_certificates_are_those_cfo_certs_makes(helm: Helm) -> None:
    secrets = {key[2]: obj for key, obj in by_key(helm.template(NS)).items() if key in BOOTSTRAP_SECRETS}

    def pem(name: str, item: str) -> bytes:
        return base64.b64decode(secrets[secret_name(name)]["data"][item])

    assert {s["type"] for s in secrets.values()} == {"kubernetes.io/tls"}
    assert {frozenset(s["data"]) for s in secrets.values()} == {frozenset({"tls.crt", "tls.key", "ca.crt"})}
    ca = x509.load_pem_x509_certificate(pem(CA, "tls.crt"))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    spec = leaf_specs("customer-friendly-webhook", NS, [], [])["webhook"]
    webhook = x509.load_pem_x509_certificate(pem("webhook", "tls.crt"))
    assert webhook.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == spec.common_name
    assert set(webhook.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.DNSName)) == set(spec.dns_names)
    controller = x509.load_pem_x509_certificate(pem("controller", "tls.crt"))
    # The agent accepts the controller by this check alone (after TLS chained it to the CA).
    assert client_refusal(controller.public_bytes(encoding=serialization.Encoding.DER), CONTROLLER_CN) is None
    for name, leaf in (("webhook", webhook), ("controller", controller)):
        leaf.verify_directly_issued_by(ca)
        assert pem(name, "ca.crt") == pem(CA, "tls.crt")
        assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)


def test_cert_manager_render_is_the_cert_manager_overlay(helm: Helm) -> None:
    chart = helm.template(NS, "--set", "certManager.enabled=true")
    overlay = kustomize(MANIFESTS / "overlays" / "cert-manager")
    assert_same_objects(chart, overlay, only_in_chart=set(), only_in_kustomize={NAMESPACE})


def test_values_reach_the_objects(helm: Helm, tmp_path: Path) -> None:
    selector = {"matchLabels": {"customer-friendly.dev/webhook": "on"}}
    resources = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    values = {
        "images": {"webhook": {"repository": "registry.example/cfo/webhook", "tag": "0.2.0"},
                   "controller": {"tag": "0.2.1", "pullPolicy": "Always"},
                   "agent": {"repository": "registry.example/cfo/agent", "pullPolicy": "Never"}},
        "webhook": {"replicas": 3, "namespaceSelector": selector},
        "controller": {"replicas": 1, "resources": resources},
        "policy": {"preStopSeconds": 20, "autoRollback": False, "storageClass": "local-path",
                   "agentVolumes": [{"name": "releases", "emptyDir": {}}]},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    rendered = by_key(helm.template(NS, "--values", str(tmp_path / "values.yaml")))
    webhook = rendered[("Deployment", NS, "customer-friendly-webhook")]["spec"]
    controller = rendered[("Deployment", NS, "customer-friendly-controller")]["spec"]
    assert webhook["replicas"] == 3 and controller["replicas"] == 1
    [webhook_container] = webhook["template"]["spec"]["containers"]
    [controller_container] = controller["template"]["spec"]["containers"]
    assert (webhook_container["image"], webhook_container["imagePullPolicy"]) == (
        "registry.example/cfo/webhook:0.2.0", "IfNotPresent")
    assert (controller_container["image"], controller_container["imagePullPolicy"]) == (
        "ghcr.io/customer-friendly/controller:0.2.1", "Always")
    assert controller_container["resources"] == resources
    [hook] = rendered[("MutatingWebhookConfiguration", "", "customer-friendly-operator")]["webhooks"]
    assert hook["namespaceSelector"] == selector
    policy = rendered[("ConfigMap", NS, "customer-friendly-policy")]["data"]
    assert policy["agentImage"] == "registry.example/cfo/agent:0.1.0"
    assert policy["agentImagePullPolicy"] == "Never"
    assert (policy["preStopSeconds"], policy["autoRollback"], policy["storageClass"]) == ("20", "false", "local-path")
    assert yaml.safe_load(policy["agentVolumes"]) == [{"name": "releases", "emptyDir": {}}]
    assert policy["agentClientCA"].startswith("-----BEGIN CERTIFICATE-----")


def test_an_unknown_policy_key_fails_the_render(helm: Helm) -> None:
    result = helm.run("template", "cfo", str(CHART), "--namespace", NS, "--set", "policy.preStopSecond=20",
                      check=False)
    assert result.returncode != 0
    assert "policy.preStopSecond: not a key of the policy" in result.stderr


MONITORING_VALUES = {"serviceMonitor": ("ServiceMonitor", "PodMonitor"), "prometheusRule": ("PrometheusRule",),
                     "grafanaDashboard": ("ConfigMap",)}
"""Each `monitoring.*` value, and the kinds of manifests/monitoring it renders."""


@pytest.mark.parametrize("value", [*MONITORING_VALUES, "all"])
def test_monitoring_renders_what_kustomize_renders_of_manifests_monitoring(helm: Helm, value: str) -> None:
    on = set(MONITORING_VALUES) if value == "all" else {value}
    chart = helm.template(NS, *[arg for name in on for arg in ("--set", f"monitoring.{name}.enabled=true")])
    wanted = {kind for name in on for kind in MONITORING_VALUES[name]}
    kustomized = [obj for obj in kustomize(MANIFESTS / "monitoring") if obj["kind"] in wanted]
    assert {obj["kind"] for obj in kustomized} == wanted
    base = {(obj["kind"], obj["metadata"]["name"]) for obj in helm.template(NS)}
    assert_same_objects([obj for obj in chart if (obj["kind"], obj["metadata"]["name"]) not in base],
                        kustomized, set(), set())


def test_monitoring_labels_reach_every_monitoring_object(helm: Helm) -> None:
    chart = helm.template(NS, "--set", "monitoring.labels.release=kube-prometheus-stack",
                          *[arg for name in MONITORING_VALUES for arg in ("--set", f"monitoring.{name}.enabled=true")])
    ours = [obj for obj in chart if obj["kind"] in {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
            or obj["metadata"]["name"] == "customer-friendly-dashboard"]
    assert len(ours) == 4
    assert all(obj["metadata"]["labels"]["release"] == "kube-prometheus-stack" for obj in ours)
    assert not [obj for obj in chart if obj not in ours and "release" in obj["metadata"].get("labels", {})]


def test_monitoring_is_off_by_default(helm: Helm) -> None:
    kinds = {obj["kind"] for obj in helm.template(NS)}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert "customer-friendly-dashboard" not in {obj["metadata"]["name"] for obj in helm.template(NS)}


@pytest.fixture(scope="module")
def packaged(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("package")
    helm.run("package", str(CHART), "--destination", str(out))
    [archive] = out.glob("customer-friendly-operator-*.tgz")
    yield archive


def test_package_holds_the_linked_manifests(packaged: Path) -> None:
    with tarfile.open(packaged) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for link in ("base", "cert-manager", "monitoring"):
            target = (CHART / "files" / link)
            assert target.is_symlink() and not os.readlink(target).startswith("/")
            for path in sorted(target.resolve().iterdir()):
                member = members[f"customer-friendly-operator/files/{link}/{path.name}"]
                assert member.isfile()
                extracted = tar.extractfile(member)
                assert extracted is not None and extracted.read() == path.read_bytes()


def test_packaged_chart_renders_as_the_directory(helm: Helm, packaged: Path) -> None:
    # cert-manager: the bootstrap's certificates are new at each render.
    values = ["--set", "certManager.enabled=true", "--set", "monitoring.serviceMonitor.enabled=true",
              "--set", "monitoring.prometheusRule.enabled=true"]
    assert helm.template(NS, *values, chart=packaged) == helm.template(NS, *values)

