"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

Started the way envtest starts it, from binaries that `testbed/k8s/build.sh` builds from the
Go module proxy and caches under ~/.cache. Used by the pytest session fixtures, by
`make cluster` and by the demo. There is no kubelet and no scheduler: pods stay Pending
unless a test writes their status.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization

from customer_friendly.certs.pki import KeyPair, LeafSpec, Usage, create_ca, issue, new_key

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "testbed" / "k8s" / "build.sh"


class ControlPlaneError(RuntimeError):
    """A component failed to build or start; the message carries its log tail."""


def binaries() -> Path:
    """The directory with etcd, kube-apiserver, kube-controller-manager and kubectl.

    Builds them when they are missing (minutes, once) and fails loudly when it cannot:
    integration tests never skip for want of a binary.
    """
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}; see its output above")
    return Path(result.stdout.strip().splitlines()[-1])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def terminate(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; a no-op for a process already gone."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_ready(name: str, proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float,
               log: Path) -> None:
    """Poll `ready` until it is true; fail with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{tail(log)}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise ControlPlaneError(f"{name} not ready after {timeout:.0f}s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class _Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config))


@dataclass
class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) in `workdir`, all on 127.0.0.1."""

    workdir: Path
    with_controller_manager: bool = True
    bin_dir: Path | None = None
    address: str = "127.0.0.1"
    """Where the API server listens and what it advertises; the real node needs an address its pods reach."""
    for_node: bool = False
    """A kubelet joins: Node authorization, kubelet client credentials, the node-lifecycle controller,
    the ServiceAccount admission plugin, and the `kubernetes` Service's endpoint kept by the API server."""
    apiserver_args: tuple[str, ...] = ()
    """More flags for kube-apiserver (a test that needs, say, a resource's watch cache off)."""
    processes: list[_Process] = field(default_factory=list)
    api_port: int = 0
    etcd_url: str = ""
    kubeconfig: Path = field(init=False)
    ca: KeyPair = field(init=False)

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    @property
    def kubectl_path(self) -> Path:
        assert self.bin_dir is not None
        return self.bin_dir / "kubectl"

    def env(self) -> dict[str, str]:
        """Environment for a child process (kubectl, the controller) that talks to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.kubectl_path), *args], input=input, capture_output=True, text=True,
                                env=self.env(), timeout=120, check=False)
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def compact_etcd(self) -> int:
        """Compact etcd's history up to now, as a long-running API server has it done every 5
        minutes: a watch from a version before this gets 410 Gone. The revision compacted to."""
        def call(path: str, body: dict[str, object]) -> dict[str, Any]:
            request = urllib.request.Request(f"{self.etcd_url}{path}", data=json.dumps(body).encode(), method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)

        revision = int(call("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    # --- start-up -------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        self.bin_dir = self.bin_dir or binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = self._write_pki()
        try:
            etcd_url = self.etcd_url = self._start_etcd()
            self._start_apiserver(etcd_url, pki)
            if self.with_controller_manager:
                self._start_controller_manager(pki)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_pki(self) -> dict[str, Path]:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        self.ca = create_ca("cfo-test-cluster-ca", 30, now)
        leaves = {
            "apiserver": issue(self.ca, LeafSpec(
                "kube-apiserver", Usage.SERVER,
                ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
                tuple(dict.fromkeys(("127.0.0.1", "10.0.0.1", self.address)))), 30, now),
            "admin": issue(self.ca, LeafSpec("cfo-admin", Usage.CLIENT, organization="system:masters"), 30, now),
        }
        paths = {"ca.crt": pki / "ca.crt"}
        paths["ca.crt"].write_bytes(self.ca.cert_pem())
        for name, pair in leaves.items():
            (pki / f"{name}.crt").write_bytes(pair.cert_pem())
            (pki / f"{name}.key").write_bytes(pair.key_pem())
            paths[f"{name}.crt"], paths[f"{name}.key"] = pki / f"{name}.crt", pki / f"{name}.key"
        sa_key = new_key()
        (pki / "sa.key").write_bytes(sa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        paths["sa.key"], paths["sa.pub"] = pki / "sa.key", pki / "sa.pub"
        return paths

    def _spawn(self, name: str, args: list[str]) -> _Process:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as fh:
            proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        process = _Process(name, proc, log)
        self.processes.append(process)
        return process

    @property
    def _bin(self) -> Path:
        assert self.bin_dir is not None, "start() finds the binaries first"
        return self.bin_dir

    def _wait(self, process: _Process, ready: Callable[[], bool], timeout: float) -> None:
        wait_ready(process.name, process.proc, ready, timeout, process.log)

    def _start_etcd(self) -> str:
        client_port, peer_port = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn("etcd", [
            str(self._bin / "etcd"),
            "--name=cfo-test",
            f"--data-dir={self.workdir / 'etcd-data'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=cfo-test={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ])

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client_url}/health", timeout=2) as resp:
                return b'"health":"true"' in resp.read()

        self._wait(etcd, healthy, 60)
        return client_url

    def _start_apiserver(self, etcd_url: str, pki: dict[str, Path]) -> None:
        self.api_port = free_port(self.address)
        self._apiserver_args = [
            str(self._bin / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--cert-dir={self.workdir / 'pki'}",
            f"--tls-cert-file={pki['apiserver.crt']}", f"--tls-private-key-file={pki['apiserver.key']}",
            f"--secure-port={self.api_port}", f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            f"--client-ca-file={pki['ca.crt']}",
            f"--service-account-issuer=https://{self.address}:{self.api_port}/",
            f"--service-account-key-file={pki['sa.pub']}",
            f"--service-account-signing-key-file={pki['sa.key']}",
            "--profiling=false",
        ]
        if self.for_node:
            self._apiserver_args += [
                # The kubelet's system:node:<name> certificate gets its rights from the Node authorizer.
                "--authorization-mode=Node,RBAC",
                f"--kubelet-client-certificate={pki['admin.crt']}", f"--kubelet-client-key={pki['admin.key']}",
                f"--kubelet-certificate-authority={pki['ca.crt']}",
                # The node's name resolves nowhere: `kubectl logs` must dial its InternalIP.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
            ]
        else:
            self._apiserver_args += [
                "--authorization-mode=RBAC",
                # No controller may have created the default ServiceAccount yet when a test creates
                # its first pod; envtest turns this plugin off for the same reason.
                "--disable-admission-plugins=ServiceAccount",
                "--endpoint-reconciler-type=none",
            ]
        self._apiserver_args += list(self.apiserver_args)
        apiserver = self._spawn("kube-apiserver", self._apiserver_args)
        self._pki = pki
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        write_kubeconfig(self.kubeconfig, self.server, pki["ca.crt"], pki["admin.crt"], pki["admin.key"],
                         "cfo-admin")
        self._wait_apiserver(apiserver)

    def _wait_apiserver(self, apiserver: _Process) -> None:
        context = ssl.create_default_context(cafile=str(self._pki["ca.crt"]))
        context.load_cert_chain(self._pki["admin.crt"], self._pki["admin.key"])

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.server}/readyz", timeout=5, context=context) as resp:
                return resp.status == 200

        self._wait(apiserver, ready, 120)

    def restart_apiserver(self, down_seconds: float = 1.0) -> None:
        """Stop kube-apiserver and start it again on the same port and etcd, as an upgrade would."""
        old = next(p for p in self.processes if p.name == "kube-apiserver")
        terminate(old.proc, 10)
        self.processes.remove(old)
        time.sleep(down_seconds)
        self._wait_apiserver(self._spawn("kube-apiserver", self._apiserver_args))

    def _start_controller_manager(self, pki: dict[str, Path]) -> None:
        kcm = self._spawn("kube-controller-manager", [
            str(self._bin / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--service-account-private-key-file={pki['sa.key']}",
            f"--root-ca-file={pki['ca.crt']}",
            "--leader-elect=false",
            f"--secure-port={free_port()}", "--bind-address=127.0.0.1",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            # Nothing cloud-bound runs. Without a kubelet nothing node-bound runs either; with one,
            # the node-lifecycle controller must run: only it lifts a new Node's not-ready taint.
            # The ephemeral-volume controller always runs: it creates each pod's code-volume claim
            # from the injected template, as on EKS.
            "--controllers=*,-node-ipam-controller,-node-route-controller,-cloud-node-lifecycle-controller,"
            "-service-lb-controller" + ("" if self.for_node else ",-node-lifecycle-controller,"
                                        "-persistentvolume-attach-detach-controller,"
                                        "-persistentvolume-expander-controller"),
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            "--kube-api-qps=100", "--kube-api-burst=200",
        ])
        # Ready when it has started controllers: it writes no health file, so watch its log.
        self._wait(kcm, lambda: "Started controller" in kcm.log.read_text(errors="replace")
                   or "Starting controller" in kcm.log.read_text(errors="replace"), 60)

    def stop(self) -> None:
        for process in reversed(self.processes):
            terminate(process.proc, 10)
        self.processes.clear()

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for a plain user (a client certificate with CN=user), for RBAC tests."""
        now = dt.datetime.now(dt.UTC)
        pair = issue(self.ca, LeafSpec(user, Usage.CLIENT, organization=groups[0] if groups else None), 30, now)
        pki = self.workdir / "pki"
        (pki / f"user-{user}.crt").write_bytes(pair.cert_pem())
        (pki / f"user-{user}.key").write_bytes(pair.key_pem())
        path = self.workdir / f"{user}.kubeconfig"
        write_kubeconfig(path, self.server, pki / "ca.crt", pki / f"user-{user}.crt", pki / f"user-{user}.key", user)
        return path

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
