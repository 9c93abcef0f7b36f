"""Helm and our chart (charts/customer-friendly-operator) for the tests: the helm binary, built
from the Go module proxy like the Kubernetes binaries, and renders read back as objects so that
they can be compared with kustomize's render of manifests/ object by object.

Nothing here skips: a missing helm is built (testbed/helm/build.sh), or the caller fails with
the build's error.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testbed.controlplane import ROOT, ControlPlaneError

CHART = ROOT / "charts" / "customer-friendly-operator"
BUILD_SCRIPT = ROOT / "testbed" / "helm" / "build.sh"

Key = tuple[str, str, str]
"""An object's identity in a render: kind, namespace ("" when cluster-scoped), name."""


def helm_binary() -> Path:
    """The helm binary; built (minutes, once) when it is missing, or an error saying why not."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}; see its output above")
    return Path(result.stdout.strip().splitlines()[-1])


def objects(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML text, empty documents left out."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def by_key(rendered: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The objects of a render by identity; a render naming one object twice is an error."""
    keyed = {key(obj): obj for obj in rendered}
    if len(keyed) != len(rendered):
        raise ValueError(f"a render holds the same object twice: {sorted(key(o) for o in rendered)}")
    return keyed


def without_labels(obj: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """A copy of `obj` without the metadata labels in `names` (and no empty labels map left)."""
    labels = {k: v for k, v in (obj["metadata"].get("labels") or {}).items() if k not in names}
    metadata = {k: v for k, v in obj["metadata"].items() if k != "labels"} | ({"labels": labels} if labels else {})
    return obj | {"metadata": metadata}


@dataclass(frozen=True)
class Helm:
    """helm with its own cache, config and data directories (never the user's), against the
    cluster of `env`'s KUBECONFIG when it has one."""

    binary: Path
    home: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "HELM_CACHE_HOME": str(self.home / "cache"), "HELM_CONFIG_HOME": str(self.home / "config"),
               "HELM_DATA_HOME": str(self.home / "data")}
        result = subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=env, timeout=timeout,
                                check=False, cwd=ROOT)
        if check and result.returncode != 0:
            raise ControlPlaneError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def template(self, namespace: str, *args: str, chart: Path = CHART) -> list[dict[str, Any]]:
        """`helm template` of the chart into `namespace`, as objects."""
        return objects(self.run("template", "cfo", str(chart), "--namespace", namespace, *args).stdout)
