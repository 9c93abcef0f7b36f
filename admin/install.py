"""Install, upgrade and uninstall the cluster-wide parts, with kubectl and `cfo-certs`.

The manifests are kustomize's render of manifests/base; two values are filled in on the way:
the webhook's caBundle and the policy's agentClientCA (the CA the agents trust). An upgrade
keeps the certificates (`cfo-certs` keeps what is valid) and never overwrites the policy
ConfigMap the user may have edited; it only fills in agentClientCA when that is empty.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from customer_friendly.certs.cli import ensure, leaf_specs
from customer_friendly.certs.pki import Validity
from customer_friendly.certs.store import SecretStore
from customer_friendly.contract.policy import INSTALL_NAMESPACE, POLICY_CONFIGMAP, PolicyError, policy_from_mapping

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "manifests" / "base"
WEBHOOK_CONFIGURATION = "customer-friendly-operator"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


DEFAULT_REGISTRY = "ghcr.io/customer-friendly/"


def _retag(image: str, registry: str | None) -> str:
    return registry.rstrip("/") + "/" + image[len(DEFAULT_REGISTRY):] if registry and image.startswith(
        DEFAULT_REGISTRY) else image


def fill_in(objects: list[dict[str, Any]], ca_pem: bytes, keep_policy: bool,
            registry: str | None = None, policy_values: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The rendered manifests with the caBundle, the agents' CA, the image registry and the user's
    policy values filled in. Pure."""
    out = []
    for obj in objects:
        if obj["kind"] == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                container["image"] = _retag(container["image"], registry)
        if obj["kind"] == "MutatingWebhookConfiguration":
            for hook in obj["webhooks"]:
                hook["clientConfig"]["caBundle"] = base64.b64encode(ca_pem).decode()
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == POLICY_CONFIGMAP:
            if keep_policy:
                continue
            obj["data"]["agentClientCA"] = ca_pem.decode()
            if "agentImage" in obj["data"]:
                obj["data"]["agentImage"] = _retag(obj["data"]["agentImage"], registry)
            obj["data"].update(policy_values or {})
        out.append(obj)
    return out


def policy_values(pairs: list[str], files: list[Path]) -> dict[str, str]:
    """`--policy FILE` (a data map or a whole ConfigMap) and `--set KEY=VALUE`, later ones winning.

    Each value is checked against the policy's rules together with the defaults, so a typo fails
    the install before anything is applied.
    """
    values: dict[str, str] = {}
    for path in files:
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise PolicyError(f"{path}: a policy file is a mapping of policy keys to values")
        data = loaded.get("data", {}) if loaded.get("kind") == "ConfigMap" else loaded
        values |= {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PolicyError(f"--set {pair!r}: expected KEY=VALUE, such as storageClass=efs-sc")
        values[key.strip()] = value
    policy_from_mapping(values)
    return values


def order(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Namespace and RBAC first, the webhook configuration last: it must not call a webhook
    that does not exist yet, and uninstall removes it first."""
    rank = {"Namespace": 0, "ServiceAccount": 1, "ClusterRole": 1, "Role": 1, "ClusterRoleBinding": 2,
            "RoleBinding": 2, "ConfigMap": 3, "Service": 4, "Deployment": 5, "PodDisruptionBudget": 5,
            "MutatingWebhookConfiguration": 9}
    return sorted(objects, key=lambda o: rank.get(o["kind"], 6))


class Installer:
    def __init__(self, kubectl: Kubectl, core_v1: Any) -> None:
        self.kubectl, self.core = kubectl, core_v1

    def render(self, base: Path = BASE) -> list[dict[str, Any]]:
        text = self.kubectl("kustomize", str(base)).stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def ensure_certificates(self) -> bytes:
        store = SecretStore(self.core, INSTALL_NAMESPACE)
        specs = leaf_specs("customer-friendly-webhook", INSTALL_NAMESPACE, [], [])
        return ensure(store, specs, Validity()).ca.cert_pem()

    def _policy_exists(self) -> bool:
        return self.kubectl("-n", INSTALL_NAMESPACE, "get", "configmap", POLICY_CONFIGMAP, check=False).returncode == 0

    def install(self, upgrade: bool = False, dry_run: bool = False, registry: str | None = None,
                values: dict[str, str] | None = None) -> list[str]:
        """Apply everything; on upgrade the edited policy stays, except for the keys in `values`."""
        objects = self.render()
        namespace = next(o for o in objects if o["kind"] == "Namespace")
        self.kubectl("apply", "-f", "-", input=json.dumps(namespace))
        ca_pem = self.ensure_certificates()
        keep_policy = upgrade and self._policy_exists()
        objects = order(fill_in(objects, ca_pem, keep_policy, registry, values))
        args = ["apply", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
        applied = self.kubectl(*args, input=yaml.safe_dump_all(objects)).stdout.splitlines()
        if keep_policy and not dry_run:
            self._fill_agent_ca(ca_pem)
            if values:
                self.kubectl("-n", INSTALL_NAMESPACE, "patch", "configmap", POLICY_CONFIGMAP, "--type=merge", "-p",
                             json.dumps({"data": values}))
        return applied

    def _fill_agent_ca(self, ca_pem: bytes) -> None:
        current = json.loads(self.kubectl("-n", INSTALL_NAMESPACE, "get", "configmap", POLICY_CONFIGMAP, "-o",
                                          "json").stdout)
        if not (current.get("data") or {}).get("agentClientCA"):
            patch = {"data": {"agentClientCA": ca_pem.decode()}}
            self.kubectl("-n", INSTALL_NAMESPACE, "patch", "configmap", POLICY_CONFIGMAP, "--type=merge", "-p",
                         json.dumps(patch))

    def uninstall(self) -> list[str]:
        """Remove everything we installed; opted-in Deployments and their pods are left as they are."""
        removed = []
        objects = list(reversed(order(self.render())))
        for obj in objects:
            if obj["kind"] == "Namespace":
                continue
            namespace = ["-n", obj["metadata"]["namespace"]] if obj["metadata"].get("namespace") else []
            result = self.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], *namespace,
                                  "--ignore-not-found", "--wait=false", check=False)
            removed += [line for line in result.stdout.splitlines() if line]
        result = self.kubectl("delete", "namespace", INSTALL_NAMESPACE, "--ignore-not-found", "--wait=false",
                              check=False)
        return removed + [line for line in result.stdout.splitlines() if line]
