"""The Helm chart on the real node: `helm install --wait` runs the webhook and controller pods from
our images with the certificates the chart bootstrapped, and the webhook injects through them;
`helm upgrade` changes a policy key and the webhook's replicas and keeps the certificates;
`helm uninstall` leaves nothing of ours.

It uses the node without the session's `product` (cfo-admin's install takes the same names), and
runs before any test that uses it (tests/node/conftest.py orders it first).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from customer_friendly import contract as c
from testbed import images
from testbed.chart import CHART, Helm, Key, by_key, helm_binary, objects
from testbed.node import STORAGE_CLASS, Node

NS = "customer-friendly-system"
APP_NS = "helm-app"


@pytest.fixture(scope="module")
def helm_release(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    """helm against the node, the install namespace made as README's "Install with Helm" says;
    whatever a failed test left is uninstalled afterwards."""
    helm = Helm(helm_binary(), tmp_path_factory.mktemp("helm"), node.env())
    node.kubectl("create", "namespace", NS)
    node.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted")
    yield helm
    helm.run("uninstall", "cfo", "--namespace", NS, "--wait", "--ignore-not-found", check=False)
    for namespace in (APP_NS, NS):
        node.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=180s", check=False)


def node_values(path: Path) -> Path:
    """Our images as the node has them (imported, never pulled) and its StorageClass."""
    values = {"images": {name: {"repository": f"{images.REGISTRY}/{name}", "tag": images.PRODUCT_TAG,
                                "pullPolicy": "Never"} for name in ("webhook", "controller", "agent")},
              "policy": {"storageClass": STORAGE_CLASS}}
    path.write_text(yaml.safe_dump(values))
    return path


def get(node: Node, kind: str, name: str, namespace: str = NS) -> dict[str, Any]:
    args = ["-n", namespace] if namespace else []
    return json.loads(node.kubectl("get", kind, name, *args, "-o", "json").stdout)


def ready_replicas(node: Node, name: str) -> int:
    return int(get(node, "deployment", name).get("status", {}).get("readyReplicas") or 0)


def injected_containers(node: Node) -> list[str]:
    """The containers an opted-in Deployment gets from the webhook (a server-side dry run: the API
    server calls the webhook through its Service, with the caBundle the chart set)."""
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": APP_NS, "annotations": {
            c.ENABLED: "true", c.RELEASE: "v1", c.SOURCE: "s3://releases/web/{release}.tar.gz"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                     {"name": "puma", "image": images.APP_IMAGE_ROOT, "imagePullPolicy": "Never"}]}}},
    }
    out = json.loads(node.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-",
                                  input=json.dumps(deployment)).stdout)
    spec = out["spec"]["template"]["spec"]
    return [container["name"] for container in spec.get("initContainers", []) + spec["containers"]]


def exists(node: Node, key: Key) -> bool:
    kind, namespace, name = key
    args = ["-n", namespace] if namespace else []
    return node.kubectl("get", kind, name, *args, check=False).returncode == 0


def test_helm_install_upgrade_and_uninstall_on_the_real_node(node: Node, helm_release: Helm, tmp_path: Path) -> None:
    helm = helm_release
    values = node_values(tmp_path / "values.yaml")
    helm.run("install", "cfo", str(CHART), "--namespace", NS, "--values", str(values), "--wait", "--timeout", "5m")
    installed = by_key(objects(helm.run("get", "manifest", "cfo", "--namespace", NS).stdout))
    assert ready_replicas(node, "customer-friendly-webhook") == 2
    assert ready_replicas(node, "customer-friendly-controller") == 2
    node.kubectl("create", "namespace", APP_NS)
    assert c.AGENT_CONTAINER in injected_containers(node)
    ca_before = get(node, "secret", "customer-friendly-ca")["data"]["ca.crt"]
    [hook] = get(node, "mutatingwebhookconfiguration", "customer-friendly-operator", "")["webhooks"]
    assert hook["clientConfig"]["caBundle"] == ca_before
    policy = get(node, "configmap", "customer-friendly-policy")["data"]
    assert policy["agentClientCA"] == base64.b64decode(ca_before).decode()
    assert (policy["preStopSeconds"], policy["storageClass"]) == ("15", STORAGE_CLASS)

    helm.run("upgrade", "cfo", str(CHART), "--namespace", NS, "--reuse-values", "--set", "policy.preStopSeconds=20",
             "--set", "webhook.replicas=3", "--wait", "--timeout", "5m")
    assert get(node, "configmap", "customer-friendly-policy")["data"]["preStopSeconds"] == "20"
    assert get(node, "deployment", "customer-friendly-webhook")["spec"]["replicas"] == 3
    assert ready_replicas(node, "customer-friendly-webhook") == 3
    # The certificates are kept (the chart looks them up), so running agents keep trusting the controller.
    assert get(node, "secret", "customer-friendly-ca")["data"]["ca.crt"] == ca_before
    [hook] = get(node, "mutatingwebhookconfiguration", "customer-friendly-operator", "")["webhooks"]
    assert hook["clientConfig"]["caBundle"] == ca_before
    assert json.loads(helm.run("status", "cfo", "--namespace", NS, "-o", "json").stdout)["version"] == 2
    assert c.AGENT_CONTAINER in injected_containers(node)

    helm.run("uninstall", "cfo", "--namespace", NS, "--wait", "--timeout", "5m")
    assert len(installed) >= 15
    assert [key for key in installed if exists(node, key)] == []
    node.wait("our pods to be gone", lambda: not json.loads(node.kubectl(
        "get", "pods", "-n", NS, "-o", "json").stdout)["items"], 120)
    assert helm.run("list", "--namespace", NS, "-q").stdout.strip() == ""
