"""The product on the real node: installed by `cfo-admin install`, an opted-in Puma app, and
release sources that pods can reach (S3 from moto, HTTPS behind a private CA, a host directory).

Shared by the real-node tests, `make demo` and the benchmark. It only reads what the node did
(pods, their volumes, restarts and endpoints); it never writes pod status.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml

from customer_friendly import contract as c
from customer_friendly.certs.pki import LeafSpec, Usage, create_ca, issue
from testbed import images
from testbed.controlplane import ROOT, ControlPlaneError, free_port, terminate, wait_ready
from testbed.node import NODE_IP, STORAGE_CLASS, Node
from testbed.puma_app import AgentClient, MotoS3, publish

INSTALL_NAMESPACE = "customer-friendly-system"
BUCKET = "releases"
RELEASE_CA_CONFIGMAP = "cfo-release-ca"
RELEASE_CREDENTIALS = "cfo-release-credentials"
PUMA_PORT = 3000

PUMA_CONFIG = """# Read once by the master; `directory` is re-resolved at each phased restart.
directory "/app/current"
rackup "config.ru"
workers {workers}
threads 2, 4
bind "tcp://0.0.0.0:{port}"
worker_boot_timeout 15
# Behind a balancer: a worker stopping for a phased restart must not reset a queued connection.
queue_requests false
preload_app! false
"""

GOOD_APP = """RELEASE = "{release}"
run ->(env) {{
  env["rack.input"].read
  [200, {{"content-type" => "text/plain"}}, ["#{{RELEASE}} #{{Process.pid}}\\n"]]
}}
"""
BROKEN_APP = 'raise "release {release} cannot boot: missing SECRET_KEY_BASE"\n'

CPU_BURN = """# Burns CPU time of the calling thread (not wall time: a starved thread burns longer).
def burn_cpu(seconds)
  clock = Process::CLOCK_THREAD_CPUTIME_ID
  stop = Process.clock_gettime(clock) + seconds
  nil while Process.clock_gettime(clock) < stop
end
"""

COSTLY_APP = CPU_BURN + """RELEASE = "{release}"
# What a Rails app does when each worker loads it (preload_app! is off): eager loading, in CPU.
burn_cpu({boot_cpu})
{after_boot}run ->(env) {{
  env["rack.input"].read
  burn_cpu({request_cpu})
  [200, {{"content-type" => "text/plain"}}, ["#{{RELEASE}} #{{Process.pid}} #{{ENV["HOSTNAME"]}}\\n"]]
}}
"""

BOOT_NICE_CONFIG = """# The booting worker yields the CPU to the serving ones of its pod (the niceness is per thread on
# Linux, and the app loads in the worker's main thread; config.ru sets it back once loaded).
on_worker_boot {{ Process.setpriority(Process::PRIO_PROCESS, 0, {nice}) }}
"""

NICE_BACK = """# Back to the usual priority once loaded (needs CAP_SYS_NICE: lowering niceness is privileged).
begin
  Process.setpriority(Process::PRIO_PROCESS, 0, 0)
rescue Errno::EACCES, Errno::EPERM
end
"""


@dataclass(frozen=True)
class AppCost:
    """What the bench app costs, like a real Rails app: CPU seconds to load in each worker, CPU
    milliseconds per request, and a niceness for a booting worker (0: none). The default is the
    instantly booting test app (GOOD_APP), which the tests use."""

    boot_cpu: float = 0.0
    request_cpu_ms: float = 0.0
    boot_nice: int = 0

    @property
    def costly(self) -> bool:
        return bool(self.boot_cpu or self.request_cpu_ms or self.boot_nice)

    def rackup(self, release: str) -> str:
        if not self.costly:
            return GOOD_APP.format(release=release)
        return COSTLY_APP.format(release=release, boot_cpu=self.boot_cpu, request_cpu=self.request_cpu_ms / 1000,
                                 after_boot=NICE_BACK if self.boot_nice else "")

    def puma_config(self, workers: int) -> str:
        config = PUMA_CONFIG.format(workers=workers, port=PUMA_PORT)
        return config + BOOT_NICE_CONFIG.format(nice=self.boot_nice) if self.boot_nice else config

    def container_security(self) -> dict[str, Any] | None:
        """Setting the niceness back needs CAP_SYS_NICE (the app image runs as root)."""
        return {"capabilities": {"add": ["SYS_NICE"]}} if self.boot_nice else None


def web_files(release: str, broken: bool = False, workers: int = 2, cost: AppCost | None = None) -> dict[str, str]:
    """The files of a Puma release: the Rack app and its config/puma.rb."""
    cost = cost or AppCost()
    return {"config.ru": BROKEN_APP.format(release=release) if broken else cost.rackup(release),
            "config/puma.rb": cost.puma_config(workers)}


def release_tarball(files: dict[str, str | bytes], executable: tuple[str, ...] = ()) -> bytes:
    """A release artifact holding `files` (path -> content), with a directory entry for each
    parent; the paths in `executable` get mode 0755, the others 0644."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        directories = sorted({str(parent) for name in files for parent in Path(name).parents if str(parent) != "."})
        for name in directories:
            directory = tarfile.TarInfo(name)
            directory.type, directory.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(directory)
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name in executable else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def node_release(release: str, broken: bool = False, workers: int = 2, cost: AppCost | None = None) -> bytes:
    """A release as a Rails app ships one: the app and its config/puma.rb. It answers
    `<release> <worker pid>`, so a test sees which code and which worker served it."""
    return release_tarball(dict(web_files(release, broken, workers, cost)))


class Peaks:
    """The highest value of each probe (pod count, Puma processes, ...) while a block runs,
    sampled every 200 ms in a thread: what a release cost in surge."""

    def __init__(self, **probes: Callable[[], int]) -> None:
        self.probes = probes
        self.peak = {name: probe() for name, probe in probes.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, probe in self.probes.items():
                self.peak[name] = max(self.peak[name], probe())

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Sources:
    """Where releases live: S3 (moto on the bridge), HTTPS with a private CA, and a host directory."""

    workdir: Path
    moto: MotoS3 = field(init=False)
    https_port: int = 0
    https_proc: subprocess.Popen[bytes] | None = None
    ca_pem: bytes = b""

    @property
    def files(self) -> Path:
        return self.workdir / "files"

    def s3(self) -> str:
        return f"s3://{BUCKET}/web/{{release}}.tar.gz"

    def https(self) -> str:
        return f"https://{NODE_IP}:{self.https_port}/{{release}}.tar.gz"

    def file(self) -> str:
        return "file:///releases/{release}.tar.gz"

    def start(self) -> Sources:
        self.files.mkdir(parents=True, exist_ok=True)
        self.moto = MotoS3(self.workdir, host=NODE_IP).start()
        self._client().create_bucket(Bucket=BUCKET)
        now = dt.datetime.now(dt.UTC)
        ca = create_ca("cfo-test-release-ca", 30, now)
        leaf = issue(ca, LeafSpec("releases", Usage.SERVER, ("releases.local",), (NODE_IP,)), 30, now)
        self.ca_pem = ca.cert_pem()
        cert, key = self.workdir / "https.crt", self.workdir / "https.key"
        cert.write_bytes(leaf.cert_pem())
        key.write_bytes(leaf.key_pem())
        self.https_port = free_port(NODE_IP)
        log = self.workdir / "https.log"
        with log.open("ab") as fh:
            self.https_proc = subprocess.Popen(
                [sys.executable, "-m", "testbed.https_server", "--bind", NODE_IP, "--port",
                 str(self.https_port), "--directory", str(self.files), "--cert", str(cert), "--key", str(key)],
                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

        def listening() -> bool:
            import socket

            with socket.create_connection((NODE_IP, self.https_port), timeout=1):
                return True

        wait_ready("https release server", self.https_proc, listening, 20, log)
        return self

    def _client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.moto.url, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def publish(self, release: str, data: bytes) -> None:
        """The same artifact, with its .sha256, in every source."""
        publish(self.files, release, data)
        client = self._client()
        for suffix in ("", ".sha256"):
            client.put_object(Bucket=BUCKET, Key=f"web/{release}.tar.gz{suffix}",
                              Body=(self.files / f"{release}.tar.gz{suffix}").read_bytes())

    def s3_at(self, prefix: str) -> str:
        """An S3 source of releases of its own (`publish_at` fills it), beside the shared `web/`."""
        return f"s3://{BUCKET}/{prefix}/{{release}}.tar.gz"

    def publish_at(self, prefix: str, release: str, data: bytes) -> None:
        """An artifact and its .sha256 in S3 under `prefix`, read through `s3_at(prefix)`."""
        digest = hashlib.sha256(data).hexdigest()
        client = self._client()
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{release}.tar.gz", Body=data)
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{release}.tar.gz.sha256",
                          Body=f"{digest}  {release}.tar.gz\n".encode())

    def policy(self, files: bool = False) -> dict[str, str]:
        """What a cluster admin sets so that our containers reach these sources (policy keys).

        The host directory for `file://` is a hostPath, which PodSecurity `restricted` and
        `baseline` forbid, so it is only added when asked for.
        """
        env = [
            {"name": "AWS_ENDPOINT_URL_S3", "value": self.moto.url},
            {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {
                "name": RELEASE_CREDENTIALS, "key": "access-key-id", "optional": True}}},
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {
                "name": RELEASE_CREDENTIALS, "key": "secret-access-key", "optional": True}}},
            {"name": "SSL_CERT_FILE", "value": "/etc/cfo/release-ca/ca.crt"},
        ]
        volumes: list[dict[str, Any]] = [
            {"name": "cfo-release-ca", "configMap": {"name": RELEASE_CA_CONFIGMAP, "optional": True}}]
        mounts: list[dict[str, Any]] = [
            {"name": "cfo-release-ca", "mountPath": "/etc/cfo/release-ca", "readOnly": True}]
        if files:
            volumes.append({"name": "cfo-release-files", "hostPath": {"path": str(self.files), "type": "Directory"}})
            mounts.append({"name": "cfo-release-files", "mountPath": "/releases", "readOnly": True})
        return {"agentEnv": json.dumps(env), "agentVolumes": json.dumps(volumes),
                "agentVolumeMounts": json.dumps(mounts)}

    def namespace_objects(self, namespace: str) -> list[dict[str, Any]]:
        """What an app namespace holds for the sources: the release CA and read credentials."""
        return [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": RELEASE_CA_CONFIGMAP,
                                                                   "namespace": namespace},
             "data": {"ca.crt": self.ca_pem.decode()}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": RELEASE_CREDENTIALS, "namespace": namespace},
             "stringData": {"access-key-id": "testing", "secret-access-key": "testing"}},
        ]

    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in (self.moto.proc, self.https_proc) if p is not None]

    def s3_objects(self) -> dict[str, bytes]:
        """Every object in the bucket: what `start_s3` puts back (moto keeps them in memory only)."""
        client = self._client()
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in page.get("Contents", [])]
        return {key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}

    def stop_s3(self) -> None:
        """The S3 server gone, as in an outage: connections to it are refused."""
        self.moto.stop()

    def start_s3(self, objects: dict[str, bytes]) -> subprocess.Popen[bytes]:
        """The S3 server back at the same address, holding `objects` again; its new process."""
        self.moto.start()
        client = self._client()
        client.create_bucket(Bucket=BUCKET)
        for key, body in objects.items():
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
        assert self.moto.proc is not None
        return self.moto.proc

    def stop(self) -> None:
        terminate(self.https_proc, 5)
        if hasattr(self, "moto"):
            self.moto.stop()


@dataclass
class Product:
    """Our webhook and controller, installed into the node by `cfo-admin install`."""

    node: Node
    sources: Sources
    workdir: Path
    certs: Path = field(init=False)

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "customer_friendly.admin.cli", *args, "--kubeconfig",
                   str(self.node.kubeconfig),
                   "--kubectl", str(self.node.control.kubectl_path)]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=self.node.env(), check=False,
                                timeout=300)
        if result.returncode != 0:
            raise ControlPlaneError(f"cfo-admin {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def install(self, files: bool = False) -> Product:
        policy = {"storageClass": STORAGE_CLASS, "agentImagePullPolicy": "Never", **self.sources.policy(files)}
        args = ["install", "--registry", images.REGISTRY]
        for key, value in policy.items():
            args += ["--set", f"{key}={value}"]
        self.admin(*args)
        self.wait_available()
        self.certs = self.workdir / "controller-certs"
        self.certs.mkdir(parents=True, exist_ok=True)
        secret = json.loads(self.node.kubectl("-n", INSTALL_NAMESPACE, "get", "secret",
                                              "customer-friendly-controller-tls", "-o", "json").stdout)
        for key in ("tls.crt", "tls.key"):
            (self.certs / key).write_bytes(base64.b64decode(secret["data"][key]))
        return self

    def set_policy(self, **values: str) -> None:
        """`cfo-admin upgrade --set ...`, then a restart of our pods so they read it at once
        (the kubelet refreshes a mounted ConfigMap only within its sync period, about a minute)."""
        args = ["upgrade", "--registry", images.REGISTRY]
        for key, value in values.items():
            args += ["--set", f"{key}={value}"]
        self.admin(*args)
        for name in ("customer-friendly-webhook", "customer-friendly-controller"):
            self.node.kubectl("-n", INSTALL_NAMESPACE, "rollout", "restart", "deployment", name)
        for name in ("customer-friendly-webhook", "customer-friendly-controller"):
            self.node.kubectl("-n", INSTALL_NAMESPACE, "rollout", "status", "deployment", name, "--timeout=180s")
        # The old pods serve out their preStop sleep: until they are gone, one may still answer.
        self.node.wait("the old webhook and controller pods to be gone", lambda: all(
            len(self.pods(component)) == 2 for component in ("webhook", "controller")), 120)

    def wait_available(self, timeout: float = 180) -> None:
        for name in ("customer-friendly-webhook", "customer-friendly-controller"):
            self.node.wait(f"deployment {name} available", functools.partial(self._available, name), timeout)

    def _available(self, name: str) -> bool:
        deployment = json.loads(self.node.kubectl("-n", INSTALL_NAMESPACE, "get", "deployment", name, "-o",
                                                  "json").stdout)
        status = deployment.get("status") or {}
        return status.get("readyReplicas") == deployment["spec"]["replicas"] == status.get("updatedReplicas")

    def pods(self, component: str) -> list[dict[str, Any]]:
        return json.loads(self.node.kubectl("-n", INSTALL_NAMESPACE, "get", "pods", "-l",
                                            f"app.kubernetes.io/name=customer-friendly-{component}", "-o",
                                            "json").stdout)["items"]

    def agent(self, pod: dict[str, Any]) -> AgentClient:
        return AgentClient(f"https://{pod['status']['podIP']}:9443", self.certs / "tls.crt", self.certs / "tls.key")

    def leader(self) -> str:
        """The controller pod that holds the Lease (its identity is its pod name)."""
        lease = json.loads(self.node.kubectl("-n", INSTALL_NAMESPACE, "get", "lease", "customer-friendly-controller",
                                             "-o", "json").stdout)
        return lease["spec"].get("holderIdentity") or ""

    def restart_count(self, pod_name: str, container: str) -> int:
        pod = json.loads(self.node.kubectl("-n", INSTALL_NAMESPACE, "get", "pod", pod_name, "-o", "json").stdout)
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        return next(s.get("restartCount", 0) for s in statuses if s["name"] == container)


@dataclass
class WebApp:
    """An opted-in Puma Deployment and its ClusterIP Service in a namespace of its own."""

    node: Node
    product: Product
    namespace: str
    name: str = "web"
    replicas: int = 3

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.node.kubectl("-n", self.namespace, *args, input=input, check=check)

    def manifest(self, release: str, source: str, *, image: str = images.APP_IMAGE_ROOT,
                 container_security: dict[str, Any] | None = None, pod_security: dict[str, Any] | None = None,
                 annotations: dict[str, str] | None = None, workers: int = 2) -> dict[str, Any]:
        notes = {c.ENABLED: "true", c.RELEASE: release, c.SOURCE: source, c.CANARY: "1",
                 c.MAX_UNAVAILABLE: "1", c.PRE_STOP_SECONDS: "3", c.MAX_REQUEST_SECONDS: "5",
                 **(annotations or {})}
        container: dict[str, Any] = {
            "name": "puma", "image": image, "imagePullPolicy": "Never",
            "command": ["puma", "-C", "/app/current/config/puma.rb"],
            "ports": [{"name": "http", "containerPort": PUMA_PORT}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2},
            "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
        }
        if container_security:
            container["securityContext"] = container_security
        spec: dict[str, Any] = {"containers": [container]}
        if pod_security:
            spec["securityContext"] = pod_security
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": self.name, "namespace": self.namespace, "annotations": notes},
                "spec": {"replicas": self.replicas, "selector": {"matchLabels": {"app": self.name}},
                         "template": {"metadata": {"labels": {"app": self.name}}, "spec": spec}}}

    def create(self, deployment: dict[str, Any],
               labels: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        self.prepare(labels)
        return self.apply(deployment)

    def deploy(self, release: str = "v1", **manifest: Any) -> list[dict[str, Any]]:
        """Create the app on `release` from S3 and wait until it is ready, serving and Complete."""
        self.create(self.manifest(release, self.product.sources.s3(), **manifest))
        pods = self.wait_ready(serving=release)
        self.wait_rollout(release, ("Complete",))
        return pods

    def prepare(self, labels: dict[str, str] | None = None) -> None:
        """The namespace, the Service, and what the release sources need in the namespace."""
        namespace = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": self.namespace, "labels": labels or {}}}
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": self.name, "namespace": self.namespace},
                   "spec": {"selector": {"app": self.name}, "ports": [{"port": 80, "targetPort": "http"}]}}
        self.node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(
            [namespace, *self.product.sources.namespace_objects(self.namespace), service]))

    def apply(self, deployment: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump(deployment), check=check)

    # --- what the node shows ----------------------------------------------------------------

    def deployment(self) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "deployment", self.name, "-o", "json").stdout)

    def pods(self) -> list[dict[str, Any]]:
        items = json.loads(self.kubectl("get", "pods", "-l", f"app={self.name}", "-o", "json").stdout)["items"]
        return sorted(items, key=lambda p: p["metadata"]["name"])

    def ready_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.pods() if not p["metadata"].get("deletionTimestamp") and any(
            cond["type"] == "Ready" and cond["status"] == "True" for cond in p.get("status", {}).get("conditions", []))]

    def wait_ready(self, count: int | None = None, timeout: float = 180,
                   serving: str | None = None) -> list[dict[str, Any]]:
        wanted = self.replicas if count is None else count

        def ready() -> bool:
            return len(self.ready_pods()) == wanted == len(self.pods())

        try:
            self.node.wait(f"{wanted} ready pods of {self.namespace}/{self.name}", ready, timeout)
        except ControlPlaneError as err:
            raise ControlPlaneError(f"{err}\n{self.describe()}") from err
        if serving:
            self.wait_serving(serving)
        return self.ready_pods()

    def describe(self) -> str:
        pods = self.kubectl("describe", "pods", "-l", f"app={self.name}", check=False).stdout
        fetch = self.kubectl("logs", "-l", f"app={self.name}", "-c", c.FETCH_CONTAINER, "--tail=5",
                             check=False).stdout
        events = self.kubectl("get", "events", "--sort-by=.lastTimestamp", check=False).stdout
        return f"--- pods\n{pods[-4000:]}\n--- {c.FETCH_CONTAINER}\n{fetch}\n--- events\n{events[-3000:]}"

    def wait_serving(self, release: str, timeout: float = 60) -> None:
        """Until the ClusterIP answers with `release` 20 times in a row: pods can be Ready a moment
        before kube-proxy has programmed their endpoints."""
        import http.client

        ip = self.cluster_ip()

        def answers() -> bool:
            for _ in range(20):
                conn = http.client.HTTPConnection(ip, 80, timeout=2)
                conn.request("POST", "/", body=b"")
                response = conn.getresponse()
                ok = response.status == 200 and response.read().decode().split()[0] == release
                conn.close()
                if not ok:
                    return False
            return True

        self.node.wait(f"{self.namespace}/{self.name} to serve {release} through its ClusterIP", answers, timeout)

    def cluster_ip(self) -> str:
        return json.loads(self.kubectl("get", "service", self.name, "-o", "json").stdout)["spec"]["clusterIP"]

    def rollout(self) -> dict[str, Any]:
        return json.loads(self.deployment()["metadata"].get("annotations", {}).get(c.ROLLOUT) or "{}")

    def wait_rollout(self, release: str, phases: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal last
            last = self.rollout()
            return last.get("release") == release and last.get("phase") in phases and not last.get("batch")

        try:
            self.node.wait(f"rollout of {release} to reach {phases}", reached, timeout)
        except ControlPlaneError as err:
            raise ControlPlaneError(f"{err}; last: {last}\n{self.controller_log()}") from err
        return last

    def controller_log(self) -> str:
        return self.node.kubectl("-n", INSTALL_NAMESPACE, "logs", "-l",
                                 "app.kubernetes.io/name=customer-friendly-controller", "--tail=40",
                                 check=False).stdout

    def uids(self) -> dict[str, str]:
        return {p["metadata"]["name"]: p["metadata"]["uid"] for p in self.pods()}

    def restarts(self) -> dict[str, int]:
        """Every container's restartCount, init containers (our native sidecar) included."""
        counts = {}
        for pod in self.pods():
            status = pod.get("status") or {}
            for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                counts[f"{pod['metadata']['name']}/{container['name']}"] = container.get("restartCount", 0)
        return counts

    def replicasets(self) -> list[str]:
        items = json.loads(self.kubectl("get", "replicasets", "-l", f"app={self.name}", "-o", "json").stdout)["items"]
        return sorted(r["metadata"]["name"] for r in items)

    def agent_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        code, status = self.product.agent(pod).call("GET", "/v1/status")
        assert code == 200, status
        return status

    def volume(self, pod: dict[str, Any]) -> Path:
        """The pod's code volume as the node holds it (local-path keeps it in a host directory)."""
        claim = f"{pod['metadata']['name']}-{c.CODE_VOLUME}"
        pvc = json.loads(self.kubectl("get", "pvc", claim, "-o", "json").stdout)
        pv = json.loads(self.node.kubectl("get", "pv", pvc["spec"]["volumeName"], "-o", "json").stdout)
        spec = pv["spec"]
        return Path((spec.get("hostPath") or spec.get("local"))["path"])

    def links(self, pod: dict[str, Any]) -> tuple[str | None, str | None]:
        """(current, previous) on the pod's volume."""
        volume = self.volume(pod)
        return tuple(os.readlink(volume / n) if os.path.lexists(volume / n) else None  # type: ignore[return-value]
                     for n in ("current", "previous"))

    def cfo(self, *args: str, timeout: float = 300, namespaced: bool = True) -> subprocess.CompletedProcess[str]:
        """`kubectl cfo ...`, found by kubectl as a plugin on PATH, as a user runs it."""
        env = self.node.env()
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        namespace = ["-n", self.namespace] if namespaced else []
        return subprocess.run([str(self.node.control.kubectl_path), "cfo", *args, *namespace],
                              capture_output=True, text=True, env=env, timeout=timeout, check=False)

    # --- workers and migration Jobs ---------------------------------------------------------

    def worker_manifest(self, release: str, source: str, jobs: Path, *, title: str = "worker-app",
                        annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """An opted-in Deployment (named `self.name`) of the Ruby worker of worker_app.py, released
        with `restart: drain` and found by its title. Its queue is the host directory `jobs`
        (`queue/` and `done/`), mounted at /jobs: test setup that lets the test hand it jobs
        and see them done; a real worker would use Redis."""
        notes = {c.ENABLED: "true", c.RELEASE: release, c.SOURCE: source, c.RESTART: "drain",
                 c.PROCESS: f"^{title} ", c.CANARY: "1", c.MAX_UNAVAILABLE: "1", c.PRE_STOP_SECONDS: "3",
                 c.MAX_REQUEST_SECONDS: "5", **(annotations or {})}
        for sub in ("queue", "done"):
            (jobs / sub).mkdir(parents=True, exist_ok=True)
        container: dict[str, Any] = {
            "name": "worker", "image": images.APP_IMAGE_ROOT, "imagePullPolicy": "Never",
            "command": ["ruby", "/app/current/worker.rb", "/jobs/queue", "/jobs/done"],
            "env": [{"name": "WORKER_NAME", "value": title}],
            "volumeMounts": [{"name": "jobs", "mountPath": "/jobs"}],
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        }
        spec = {"containers": [container],
                "volumes": [{"name": "jobs", "hostPath": {"path": str(jobs), "type": "Directory"}}]}
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": self.name, "namespace": self.namespace, "annotations": notes},
                "spec": {"replicas": self.replicas, "selector": {"matchLabels": {"app": self.name}},
                         "template": {"metadata": {"labels": {"app": self.name}}, "spec": spec}}}

    def job(self, name: str) -> dict[str, Any] | None:
        result = self.kubectl("get", "job", name, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def job_pods(self, name: str) -> list[dict[str, Any]]:
        return json.loads(self.kubectl("get", "pods", "-l", f"job-name={name}", "-o", "json").stdout)["items"]

    def jobs(self) -> list[str]:
        return sorted(j["metadata"]["name"] for j in json.loads(self.kubectl("get", "jobs", "-o", "json").stdout)[
            "items"])

    def logs(self, pod: str, container: str) -> str:
        return self.kubectl("logs", pod, "-c", container).stdout

    def events(self) -> list[tuple[str, str]]:
        """(reason, message) of the Events recorded on this Deployment, oldest first."""
        items = json.loads(self.kubectl("get", "events", "--field-selector",
                                        f"involvedObject.kind=Deployment,involvedObject.name={self.name}",
                                        "-o", "json").stdout)["items"]
        items.sort(key=lambda e: (e.get("lastTimestamp") or e.get("eventTime") or "", e["metadata"]["name"]))
        return [(e.get("reason") or "", e.get("message") or "") for e in items]

    def configmap_release(self) -> str | None:
        result = self.kubectl("get", "configmap", c.release_configmap_name(self.name), "-o", "json", check=False)
        return (json.loads(result.stdout).get("data") or {}).get(c.RELEASE_CONFIGMAP_KEY) \
            if result.returncode == 0 else None


def kill_container(node: Node, namespace: str, pod_name: str, container: str) -> None:
    """SIGKILL a running container's process from the node, as the OOM killer or a crash does:
    no SIGTERM, no preStop, nothing cleaned up. The kubelet then restarts the container in the
    same pod (its restartCount goes up by one)."""
    pod = json.loads(node.kubectl("-n", namespace, "get", "pod", pod_name, "-o", "json").stdout)
    statuses = pod["status"].get("initContainerStatuses", []) + pod["status"]["containerStatuses"]  # our sidecar
    status = next(s for s in statuses if s["name"] == container)
    container_id = status["containerID"].split("://", 1)[1]
    result = subprocess.run(["ctr", "--address", str(node.containerd_socket), "-n", "k8s.io", "tasks", "kill",
                             "--signal", "SIGKILL", container_id], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"could not kill {namespace}/{pod_name}/{container}: {result.stderr.strip()}")
