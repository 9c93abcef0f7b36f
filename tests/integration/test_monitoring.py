"""manifests/monitoring against the real components: the real webhook (session fixture) and the
real controller (`cfo-controller`, a process on the real API server) do a little work, their
/metrics are scraped, and every series the alerts and the dashboard name must be among what they
export. The install with monitoring renders with the test bed's kubectl."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from customer_friendly import contract as c
from testbed.controlplane import ROOT, ControlPlane, binaries, free_port, terminate, wait_ready
from testbed.webhook import WebhookServer
from tests.integration.conftest import Kube
from tests.monitoring import DASHBOARD, alerts, exported_names, unknown, used_exprs

pytestmark = pytest.mark.integration

FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "deployment.json").read_text())


class Controller:
    """`cfo-controller` on loopback: metrics on a free port, no Lease (it is alone)."""

    def __init__(self, cluster: ControlPlane, certs: Path, workdir: Path) -> None:
        self.port, self.log = free_port(), workdir / "controller.log"
        command = [sys.executable, "-m", "customer_friendly.controller", "--kubeconfig", str(cluster.kubeconfig),
                   "--cert", str(certs / "controller.crt"), "--key", str(certs / "controller.key"),
                   "--metrics-port", str(self.port), "--metrics-bind", "127.0.0.1", "--no-leader-election"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        wait_ready("cfo-controller", self.proc, lambda: bool(self.metrics()), 30, self.log)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            return response.read().decode()


@pytest.fixture
def controller(cluster: ControlPlane, webhook: WebhookServer, tmp_path: Path) -> Iterator[Controller]:
    running = Controller(cluster, webhook.cert_dir, tmp_path)
    yield running
    terminate(running.proc, 10)


def webhook_metrics(webhook: WebhookServer) -> str:
    with urllib.request.urlopen(f"{webhook.url}/metrics", timeout=5, context=webhook.ssl_context()) as response:
        return response.read().decode()


def wait_for(scrape: Controller, fragment: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = scrape.metrics()
        if fragment in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{fragment!r} not on the controller's /metrics after {timeout:.0f}s:\n{text}")


def test_every_series_the_rules_and_the_dashboard_name_is_exported(kube: Kube, webhook: WebhookServer,
                                                                   controller: Controller) -> None:
    kube.apply(FIXTURE)  # admitted by the webhook (mutated), then its first release reconciled
    refused = copy.deepcopy(FIXTURE)
    refused["metadata"]["annotations"][c.RESTART] = "rolling"
    assert kube.apply(refused, check=False).returncode != 0  # refused by the webhook
    # A release with a migration waits for its Job, which never runs here (no kubelet): a
    # rollout in progress, whose start is a series labelled with our namespace. Another whose
    # Job is past its deadline at once fails and is rolled back: a failed series.
    kube.run("annotate", "deployment/web", f"{c.RELEASE}=v42", f"{c.MIGRATE}=bin/rails db:migrate", "--overwrite")
    worker = copy.deepcopy(FIXTURE)
    worker["metadata"]["name"] = "worker"
    worker["metadata"]["annotations"].update({c.MIGRATE: "bin/rails db:migrate", c.MIGRATE_TIMEOUT: "1"})
    kube.apply(worker)
    kube.run("annotate", "deployment/worker", f"{c.RELEASE}=v42", "--overwrite")
    started = f'cfo_controller_rollout_started_timestamp_seconds{{deployment="web",namespace="{kube.namespace}"'
    failed = f'cfo_controller_rollout_failed{{deployment="worker",namespace="{kube.namespace}"'
    wait_for(controller, started)
    text = wait_for(controller, failed)
    assert "cfo_controller_api_requests_total" in text

    from_webhook = webhook_metrics(webhook)
    assert 'cfo_webhook_admission_reviews_total{outcome="refused"}' in from_webhook
    exported = exported_names(text) | exported_names(from_webhook)
    assert unknown(used_exprs(), exported) == {}


def test_the_install_with_monitoring_renders_with_kubectl_kustomize() -> None:
    kubectl = binaries() / "kubectl"
    result = subprocess.run([str(kubectl), "kustomize", str(ROOT / "manifests" / "overlays" / "monitoring")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    by_kind = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    # The whole base is there, and the monitoring beside it, all in the install namespace.
    for kind, name in [("Deployment", "customer-friendly-webhook"), ("Deployment", "customer-friendly-controller"),
                       ("ServiceMonitor", "customer-friendly-webhook"), ("PodMonitor", "customer-friendly-controller"),
                       ("PrometheusRule", "customer-friendly-operator"), ("ConfigMap", "customer-friendly-dashboard")]:
        assert by_kind[(kind, name)]["metadata"]["namespace"] == "customer-friendly-system", (kind, name)
    # The ServiceMonitor selects the webhook's Service by its labels, on a port it has.
    service = by_kind[("Service", "customer-friendly-webhook")]
    monitor = by_kind[("ServiceMonitor", "customer-friendly-webhook")]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    # The PodMonitor selects the controller's pods, on their metrics port.
    pods = by_kind[("Deployment", "customer-friendly-controller")]["spec"]["template"]
    pod_monitor = by_kind[("PodMonitor", "customer-friendly-controller")]["spec"]
    assert pod_monitor["selector"]["matchLabels"].items() <= pods["metadata"]["labels"].items()
    ports = {p["name"] for ct in pods["spec"]["containers"] for p in ct.get("ports", [])}
    assert {e["port"] for e in pod_monitor["podMetricsEndpoints"]} <= ports
    # The dashboard ConfigMap is the one file, for Grafana's sidecar; the rules are the file's.
    dashboard = by_kind[("ConfigMap", "customer-friendly-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["grafana-dashboard.json"] == DASHBOARD.read_text()
    rendered = by_kind[("PrometheusRule", "customer-friendly-operator")]
    assert [r["alert"] for g in rendered["spec"]["groups"] for r in g["rules"]] == [a["alert"] for a in alerts()]
