"""Run the real webhook (gunicorn, TLS) on loopback and register it with a real API server.

The MutatingWebhookConfiguration is the one in manifests/, with its clientConfig pointed
at our loopback URL and its caBundle filled in, so the tests exercise what users install.
"""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed.controlplane import ROOT, ControlPlane, ControlPlaneError, free_port, tail, terminate, wait_ready

MANIFEST = ROOT / "manifests" / "base" / "mutatingwebhook.yaml"


def ensure_certs(cert_dir: Path, extra_args: tuple[str, ...] = ()) -> None:
    subprocess.run([sys.executable, "-m", "customer_friendly.certs", "ensure", "--out", str(cert_dir), "--ip",
                    "127.0.0.1",
                    "--dns", "localhost", *extra_args], check=True, cwd=ROOT, capture_output=True)


@dataclass
class WebhookServer:
    """`cfo-webhook` as a child process, serving https://127.0.0.1:<port>."""

    workdir: Path
    policy_path: Path | None = None
    threads: int = 4
    workers: int = 1
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def cert_dir(self) -> Path:
        return self.workdir / "certs"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "webhook.log"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))

    def start(self) -> WebhookServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ensure_certs(self.cert_dir)
        self.port = self.port or free_port()
        args = [sys.executable, "-m", "customer_friendly.webhook.serve", "--bind", f"127.0.0.1:{self.port}",
                "--cert", str(self.cert_dir / "webhook.crt"), "--key", str(self.cert_dir / "webhook.key"),
                "--threads", str(self.threads), "--workers", str(self.workers)]
        if self.policy_path:
            args += ["--policy", str(self.policy_path)]
        env = {k: v for k, v in os.environ.items() if k != "CFO_POLICY_PATH"}
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)

        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2, context=self.ssl_context()):
                return True

        wait_ready("cfo-webhook", self.proc, healthy, 30, self.log)
        return self

    def stop(self) -> None:
        terminate(self.proc, 15)

    def ca_bundle(self) -> str:
        return base64.b64encode((self.cert_dir / "ca.crt").read_bytes()).decode()


def webhook_configuration(url: str, ca_bundle: str) -> dict[str, Any]:
    """The manifest's MutatingWebhookConfiguration, pointed at `url` by URL instead of Service."""
    config = yaml.safe_load(MANIFEST.read_text())
    for hook in config["webhooks"]:
        hook["clientConfig"] = {"url": f"{url}/mutate", "caBundle": ca_bundle}
    return config


def register(cluster: ControlPlane, server: WebhookServer) -> None:
    """Apply the configuration and wait until the API server actually calls the webhook."""
    config = webhook_configuration(server.url, server.ca_bundle())
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
    # The API server picks up webhook configurations asynchronously; probe with a dry run
    # until an opted-in Deployment comes back mutated.
    probe = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cfo-registration-probe", "namespace": "default", "annotations": {
            "customer-friendly.dev/enabled": "true", "customer-friendly.dev/release": "v1",
            "customer-friendly.dev/source": "file:///releases/{release}.tar.gz"}},
        "spec": {"selector": {"matchLabels": {"app": "probe"}}, "template": {
            "metadata": {"labels": {"app": "probe"}},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}}},
    }
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                                 input=yaml.safe_dump(probe), check=False)
        if result.returncode == 0 and "cfo-agent" in result.stdout:
            return
        time.sleep(0.3)
    raise ControlPlaneError(f"webhook registration never took effect:\n{tail(server.log)}")
