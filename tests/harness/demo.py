"""`make demo`: what the webhook does, on a real local control plane, in about ten seconds.

It starts etcd, kube-apiserver and kube-controller-manager, runs the webhook under gunicorn
with TLS, registers it from manifests/, applies examples/web.yaml, and shows the pod
template before and after, a refused bad annotation, a release change that starts no
native rollout, and the pods the controller-manager created. Then it tears it all down.
"""

from __future__ import annotations

import difflib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import ROOT, ControlPlane
from tests.harness.webhook import WebhookServer, register

EXAMPLE = ROOT / "examples" / "web.yaml"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def template_yaml(deployment: dict[str, Any]) -> list[str]:
    return yaml.safe_dump(deployment["spec"]["template"], sort_keys=False, width=100).splitlines()


def wait_for(predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError("timed out waiting")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cfo-demo-") as tmp:
        step("Starting a real control plane: etcd, kube-apiserver, kube-controller-manager (v1.35.4)")
        cluster = ControlPlane(Path(tmp) / "cluster").start()
        webhook = WebhookServer(Path(tmp) / "webhook")
        try:
            step("Starting the webhook (gunicorn gthread, TLS) and registering manifests/base/mutatingwebhook.yaml")
            webhook.start()
            register(cluster, webhook)
            print(f"webhook at {webhook.url}, API server at {cluster.server}")

            kubectl = cluster.kubectl
            kubectl("create", "namespace", "shop")
            step("kubectl apply -f examples/web.yaml")
            print(kubectl("-n", "shop", "apply", "-f", str(EXAMPLE)).stdout.strip())
            live = json.loads(kubectl("-n", "shop", "get", "deployment", "web", "-o", "json").stdout)
            # What the API server would store without us: the same object with enabled "false"
            # (which the webhook admits untouched), so the diff shows only what we add.
            plain = yaml.safe_load(EXAMPLE.read_text())
            plain["metadata"]["annotations"]["customer-friendly.dev/enabled"] = "false"
            plain["metadata"]["name"] = "web-plain"
            defaulted = json.loads(kubectl("-n", "shop", "create", "--dry-run=server", "-o", "json", "-f", "-",
                                           input=yaml.safe_dump(plain)).stdout)
            step("The pod template without the webhook (-) and as stored with it (+)")
            diff = difflib.unified_diff(template_yaml(defaulted), template_yaml(live), "without", "with",
                                        lineterm="", n=1)
            tty = sys.stdout.isatty()
            for line in diff:
                colour = "\033[32m" if line.startswith("+") else "\033[31m" if line.startswith("-") else ""
                print(f"{colour}{line}\033[0m" if colour and tty else line)

            step("A bad annotation is refused with a message that says what is accepted")
            bad = yaml.safe_load(EXAMPLE.read_text())
            bad["metadata"]["annotations"]["customer-friendly.dev/restart"] = "rolling"
            refused = kubectl("-n", "shop", "apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
            print(f"$ kubectl apply ... (exit {refused.returncode})\n{refused.stderr.strip()}")

            step("Changing the release annotation changes no pod template: no native rollout, no new pods")
            kubectl("-n", "shop", "annotate", "deployment/web", "customer-friendly.dev/release=v42", "--overwrite")
            time.sleep(1)
            rs = kubectl("-n", "shop", "get", "replicasets", "-o", "name").stdout.split()
            print(f"ReplicaSets after the release change: {len(rs)} ({', '.join(rs)})")

            step("Pods created by the ReplicaSet controller carry the injection")

            def three_pods() -> list[dict[str, Any]] | None:
                items = json.loads(kubectl("-n", "shop", "get", "pods", "-o", "json").stdout)["items"]
                return items if len(items) == 3 else None

            pods = wait_for(three_pods)
            for pod in pods:
                spec = pod["spec"]
                print(f"{pod['metadata']['name']}: init={[c['name'] for c in spec['initContainers']]} "
                      f"containers={[c['name'] for c in spec['containers']]} "
                      f"shareProcessNamespace={spec['shareProcessNamespace']} "
                      f"grace={spec['terminationGracePeriodSeconds']}s")
            claims = wait_for(lambda: kubectl("-n", "shop", "get", "pvc", "-o", "name").stdout.split(), 30)
            print(f"per-pod code volumes (EFS claims from the ephemeral-volume controller): {', '.join(claims)}")
            step("Done. The agent and the controller (in-place rollout) are the next issues; see README.")
        finally:
            webhook.stop()
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
