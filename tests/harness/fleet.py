"""A Deployment's pods made real without a kubelet, nginx in front of them, and the controller.

The test plays the kubelet's part only: for each pod the controller-manager created, it runs
the injected init step (`cfo-agent fetch` with the env the pod spec carries, the release
read from the ConfigMap as the kubelet would resolve it), starts Puma and the agent, and
writes the pod's status (Running, Ready, podIP 127.0.0.x) through the status subresource.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import contract as c
from tests.harness.controlplane import ROOT, ControlPlane, ControlPlaneError, free_port, tail, terminate, wait_ready
from tests.harness.puma_app import AgentProcess, Puma

AGENT_PORT = 9443
NAMESPACE = "customer-friendly-system"
USER = "customer-friendly-controller"
RBAC_MANIFEST = ROOT / "manifests" / "base" / "controller-rbac.yaml"
PUMA_CONFIG = ("queue_requests false",)


@dataclass
class FakeKubeletPod:
    name: str
    ip: str
    puma: Puma | None
    agent: AgentProcess


@dataclass
class Kubelet:
    """Starts what a kubelet would for each pod, on its own loopback address."""

    cluster: ControlPlane
    namespace: str
    workdir: Path
    client_ca: Path
    started: dict[str, FakeKubeletPod] = field(default_factory=dict)
    next_ip: int = 10

    def _resolve_env(self, pod: dict[str, Any]) -> dict[str, str]:
        """The fetch container's env as the kubelet resolves it (ConfigMap refs included)."""
        fetch = next(ct for ct in pod["spec"]["initContainers"] if ct["name"] == c.FETCH_CONTAINER)
        env: dict[str, str] = {}
        for item in fetch["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "configMapKeyRef" in (item.get("valueFrom") or {}):
                ref = item["valueFrom"]["configMapKeyRef"]
                result = self.cluster.kubectl("-n", self.namespace, "get", "configmap", ref["name"], "-o", "json",
                                              check=False)
                if result.returncode == 0:
                    value = (json.loads(result.stdout).get("data") or {}).get(ref["key"])
                    if value is not None:
                        env[item["name"]] = value
        return env

    def start(self, pod: dict[str, Any]) -> FakeKubeletPod:
        name = pod["metadata"]["name"]
        ip = f"127.0.0.{self.next_ip}"
        self.next_ip += 1
        home = self.workdir / name
        home.mkdir(parents=True)
        env = self._resolve_env(pod)
        code = home / "code"
        subprocess.run([sys.executable, "-m", "agent", "fetch"], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, **env, "CFO_CODE_PATH": str(code)})
        puma = Puma(code, home, extra_config=PUMA_CONFIG).start()
        agent = AgentProcess(code, home, self.client_ca, {
            "CFO_PUMA_PIDFILE": str(puma.pidfile),
            "CFO_PUMA_CONTROL_URL": puma.control_url, "CFO_PUMA_CONTROL_TOKEN": puma.token,
            "CFO_RESTART_DEADLINE_SECONDS": "15"}, port=AGENT_PORT, bind=ip)
        agent.start()
        self._report_running(name, ip)
        started = FakeKubeletPod(name, ip, puma, agent)
        self.started[name] = started
        return started

    def _report_running(self, name: str, ip: str) -> None:
        status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                             "conditions": [{"type": "Ready", "status": "True"}]}}
        self.cluster.kubectl("-n", self.namespace, "patch", "pod", name, "--subresource=status", "--type=merge",
                             "-p", json.dumps(status))

    def sync(self, selector: str, want: int, timeout: float = 60) -> list[FakeKubeletPod]:
        """Wait for `want` pods of the selector and start the ones not started yet."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = json.loads(self.cluster.kubectl("-n", self.namespace, "get", "pods", "-l", selector, "-o",
                                                   "json").stdout)["items"]
            pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            if len(pods) >= want:
                for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
                    if pod["metadata"]["name"] not in self.started:
                        self.start(pod)
                return [self.started[p["metadata"]["name"]] for p in pods]
            time.sleep(0.3)
        raise ControlPlaneError(f"only {len(pods)} of {want} pods appeared")

    def stop(self) -> None:
        for pod in self.started.values():
            pod.agent.stop()
            if pod.puma:
                pod.puma.stop()


@dataclass
class Nginx:
    """Debian's nginx as the balancer: round robin, and POSTs are never retried upstream.

    `retry_connect_errors=False` also stops nginx from passing a request whose connection
    was refused to the next upstream, as a balancer without retries (an ALB) behaves.
    """

    workdir: Path
    port: int = 0
    retry_connect_errors: bool = True
    proc: subprocess.Popen[bytes] | None = None

    def _write(self, upstream_ports: list[int]) -> Path:
        servers = "\n".join(f"    server 127.0.0.1:{p};" for p in upstream_ports) or "    server 127.0.0.1:9 down;"
        temp = "\n".join(f"  {kind}_temp_path {self.workdir}/{kind};" for kind in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        retry = "" if self.retry_connect_errors else "    proxy_next_upstream off;\n"
        conf = self.workdir / "nginx.conf"
        conf.write_text(f"""user root;
worker_processes 1;
daemon off;
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  upstream pumas {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://pumas;
{retry}    }}
  }}
}}
""")
        return conf

    def start(self, upstream_ports: list[int]) -> Nginx:
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self._write(upstream_ports)
        log = self.workdir / "nginx.out"
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(self.workdir)], stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)

        def listening() -> bool:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True

        wait_ready("nginx", self.proc, listening, 10, self.workdir / "error.log")
        return self

    def reload(self, upstream_ports: list[int]) -> None:
        """New upstreams by a graceful reload (SIGHUP), as an ingress controller does."""
        self._write(upstream_ports)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        terminate(self.proc, 5)


@dataclass
class ControllerProcess:
    cluster: ControlPlane
    workdir: Path
    certs: Path
    proc: subprocess.Popen[bytes] | None = None
    identity: str = field(default_factory=lambda: f"test-{time.time_ns()}")
    metrics_port: int = field(default_factory=free_port)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log(self) -> Path:
        return self.workdir / "controller.log"

    def _least_privileged_kubeconfig(self) -> Path:
        """The controller runs as a user bound to exactly the roles in manifests/, not as admin."""
        if self.cluster.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0:
            self.cluster.kubectl("create", "namespace", NAMESPACE)
        docs = list(yaml.safe_load_all(RBAC_MANIFEST.read_text()))
        roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role")]
        self.cluster.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=yaml.safe_dump_all(roles))
        for kind, role, extra in (("clusterrolebinding", "customer-friendly-controller", ()),
                                  ("rolebinding", "customer-friendly-controller-lease", ("-n", NAMESPACE))):
            flag = "--clusterrole" if kind == "clusterrolebinding" else "--role"
            manifest = self.cluster.kubectl("create", kind, f"{role}-test-user", f"{flag}={role}", f"--user={USER}",
                                            *extra, "--dry-run=client", "-o", "yaml").stdout
            self.cluster.kubectl("apply", "-f", "-", *extra, input=manifest)
        return self.cluster.user_kubeconfig(USER)

    def start(self) -> ControllerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        kubeconfig = self._least_privileged_kubeconfig()
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller", "--kubeconfig", str(kubeconfig),
                 "--cert", str(self.certs / "controller.crt"), "--key", str(self.certs / "controller.key"),
                 "--metrics-port", str(self.metrics_port), "--metrics-bind", "127.0.0.1",
                 "--batch-deadline", "40", "--identity", self.identity],
                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "CFO_LOG_LEVEL": "info"})
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise ControlPlaneError(f"controller exited:\n{tail(self.log)}")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        terminate(self.proc, 10)
