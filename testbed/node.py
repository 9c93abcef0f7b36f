"""A real single-node Kubernetes cluster on this machine, started and torn down by us.

Beside the control plane (`controlplane.py`) it runs containerd with runc and the CNI bridge
plugin, a kubelet, kube-scheduler, kube-proxy (iptables mode) and rancher's
local-path-provisioner with a StorageClass, so that pods are real: real containers, real
per-pod volumes provisioned dynamically, real Service endpoints and ClusterIPs. Nothing is
pulled: our images (`images.py`) are imported into containerd.

Everything lives under one work directory. The host is changed while it runs (a bridge, iptables
chains, cgroups, mounts, a few sysctls that the kubelet and the bridge set); `stop()` undoes all
of it, in the order that lets each component clean up after itself, and a start after a crash
first sweeps what the crashed run left. Requires Linux and root.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from customer_friendly.certs.pki import LeafSpec, Usage, issue
from testbed import images
from testbed.controlplane import (
    ControlPlane,
    ControlPlaneError,
    _Process,
    binaries,
    free_port,
    tail,
    terminate,
    wait_ready,
    write_kubeconfig,
)

logger = logging.getLogger(__name__)

NODE_NAME = "cfo-node"
BRIDGE = "cfo0"
POD_SUBNET = "10.88.0.0/16"
NODE_IP = "10.88.0.1"
"""The bridge's address: the node's InternalIP, where the API server listens and pods reach the host."""
STORAGE_CLASS = "local-path"
PROVISIONER = "rancher.io/local-path"
PROVISIONER_NAMESPACE = "local-path-storage"

# Sysctls the kubelet sets at start (it cannot be told not to), and ip_forward, which the bridge
# plugin sets: recorded before and restored after.
SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
           "net/ipv4/conf/all/route_localnet")
# Paths the kubelet and containerd hard-code; removed at the end if they did not exist before.
HOST_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/containerd",
              "/var/run/netns", "/opt/containerd")
CGROUP_NAMES = ("kubepods",)


def state_file() -> Path:
    return images.cache_dir().parent / "node-active.json"


def _sh(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, input=input, check=False)
    if check and result.returncode != 0:
        raise ControlPlaneError(f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def require_root_and_tools() -> None:
    if os.geteuid() != 0:
        raise ControlPlaneError("the real node needs root (it starts containerd and a kubelet); run as root")
    missing = [tool for tool in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip",
                                 "mmdebstrap", "buildah", "gcc") if shutil.which(tool) is None]
    if not Path("/usr/lib/cni/bridge").is_file():
        missing.append("containernetworking-plugins (/usr/lib/cni)")
    if missing:
        raise ControlPlaneError("the real node needs " + ", ".join(missing) + ": `make test` installs them as root "
                                "(scripts/debian-packages)")


# --- host state: recorded at start, restored at the end ------------------------------------

@dataclass
class HostState:
    sysctls: dict[str, str] = field(default_factory=dict)
    existing_paths: list[str] = field(default_factory=list)

    @classmethod
    def record(cls) -> HostState:
        values = {}
        for key in SYSCTLS:
            with contextlib.suppress(OSError):
                values[key] = Path("/proc/sys", key).read_text().strip()
        return cls(values, [p for p in HOST_PATHS if os.path.lexists(p)])

    def restore(self) -> None:
        for key, value in self.sysctls.items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", key).write_text(value)
        for path in HOST_PATHS:
            if path not in self.existing_paths and os.path.lexists(path):
                unmount_under(Path(path))
                shutil.rmtree(path, ignore_errors=True)


def mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target == str(root) or target.startswith(prefix):
            found.append(target)
    return found


def unmount_under(root: Path) -> None:
    """Lazy-unmount everything mounted at or below `root`, deepest first."""
    for target in sorted(mounts_under(root), key=len, reverse=True):
        _sh("umount", "-l", target, check=False)


def remove_iptables_chains() -> None:
    """Delete every KUBE-* and CNI-* chain and the rules that jump to them, in every table."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            listing = _sh(tool, "-w", "-t", table, "-S", check=False).stdout.splitlines()  # quoted comments
            ours = [line.split()[1] for line in listing if line.startswith("-N ")
                    and line.split()[1].startswith(("KUBE-", "CNI-"))]
            if not ours:
                continue
            for line in listing:
                parts = shlex.split(line)
                if parts[:1] == ["-A"] and parts[1] not in ours and any(
                        p in ours for p in parts[2:]):
                    _sh(tool, "-w", "-t", table, "-D", *parts[1:], check=False)
            for chain in ours:
                _sh(tool, "-w", "-t", table, "-F", chain, check=False)
            for chain in ours:
                _sh(tool, "-w", "-t", table, "-X", chain, check=False)


def remove_cgroups() -> None:
    """The kubelet's /kubepods tree in every cgroup v1 hierarchy (and v2), deepest first."""
    base = Path("/sys/fs/cgroup")
    roots = [base / name for name in CGROUP_NAMES]
    roots += [h / name for h in base.iterdir() if h.is_dir() for name in CGROUP_NAMES]
    for root in roots:
        if not root.is_dir():
            continue
        for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def remove_network() -> None:
    for netns in Path("/var/run/netns").glob("cni-*") if Path("/var/run/netns").is_dir() else []:
        _sh("umount", "-l", str(netns), check=False)
        netns.unlink(missing_ok=True)
    _sh("ip", "link", "delete", BRIDGE, check=False)
    remove_iptables_chains()


def start_ticks(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): with the pid, it names one process for good."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return int(text[text.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def kill_recorded(pids: list[list[int]]) -> None:
    """Kill what an earlier run started, by (pid, start time), so a reused pid is never hit."""
    for pid, started in pids:
        if start_ticks(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def delete_pods_through(kubectl: list[str], containerd_socket: str, timeout: float = 60) -> None:
    """Delete every pod through the API so the kubelet stops each sandbox and CNI frees its
    address, veth and rules; wait until containerd runs no task."""
    def run(*args: str) -> str:
        return _sh(*kubectl, *args, check=False).stdout

    run("delete", "mutatingwebhookconfigurations", "--all", "--wait=false")
    run("delete", "deployments,statefulsets,daemonsets,jobs,replicasets", "--all", "-A", "--wait=false")
    run("delete", "pods", "--all", "-A", "--grace-period=1", "--wait=false")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = _sh("ctr", "--address", containerd_socket, "-n", "k8s.io", "tasks", "ls", "-q",
                    check=False).stdout.split() if Path(containerd_socket).exists() else []
        if not tasks and not run("get", "pods", "-A", "-o", "name").split():
            return
        time.sleep(0.5)
    logger.warning("pods still present after %.0fs; removing them by force", timeout)


class NodeBusy(ControlPlaneError):
    """Another real node runs on this machine (they share the bridge, its address and cgroups)."""


def _try_lock() -> int | None:
    """The machine's one real-node lock, held by the process that starts (and runs) a node.

    The kernel drops it when that process dies, however it dies, so a crashed run never blocks
    the next; a node left up by `make cluster` is recognised by its recorded processes instead.
    """
    path = state_file().with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def wait_for_other_node(limit: float) -> int:
    """Take the node lock and sweep a crashed run's leftovers; wait up to `limit` seconds
    (CFO_NODE_WAIT) for a running node to stop, saying so once, or fail at once when the limit
    is 0. Returns the lock's file descriptor, to be closed when this node has stopped."""
    deadline = time.monotonic() + limit
    told = False
    while True:
        fd = _try_lock()
        try:
            if fd is None:
                raise NodeBusy("a real node is starting or running in another process on this machine; only "
                               "one can run at a time")
            sweep_leftovers()
            return fd
        except NodeBusy:
            if fd is not None:
                os.close(fd)
            if time.monotonic() >= deadline:
                raise
            if not told:
                print(f"node: waiting up to {limit:.0f}s for the other real node to stop ...", file=sys.stderr,
                      flush=True)
                told = True
            time.sleep(5)


def sweep_leftovers(graceful: bool = False) -> bool:
    """Remove what an earlier run left: one killed outright, or one `make cluster` left up on
    purpose (graceful: its pods are deleted through the API first). False when there was none."""
    path = state_file()
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    workdir = record.get("workdir")
    alive = [pid for pid, started in record.get("pids", []) if started is not None and start_ticks(pid) == started]
    if not graceful and alive:
        raise NodeBusy(f"a real node is already running here ({workdir}, pids {alive[:5]}); "
                       "only one can run at a time: stop it first (make cluster-down)")
    if not graceful:
        print(f"node: cleaning up after an earlier run that did not stop ({workdir})", file=sys.stderr)
    if graceful and record.get("kubectl"):
        with contextlib.suppress(Exception):
            delete_pods_through(record["kubectl"], record.get("containerd_socket", ""))
    kill_recorded(record.get("pids", []))
    time.sleep(0.5)
    if workdir:
        kill_shims(workdir)
    remove_network()
    if workdir:
        unmount_under(Path(workdir))
    remove_cgroups()
    HostState(record.get("sysctls", {}), record.get("existing_paths", list(HOST_PATHS))).restore()
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    path.unlink(missing_ok=True)
    return True


# --- the node -----------------------------------------------------------------------------

def provisioner_binary() -> Path:
    result = subprocess.run(["bash", str(Path(__file__).resolve().parent / "k8s" / "build-provisioner.sh")],
                            stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneError("testbed/k8s/build-provisioner.sh failed; see its output above")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class Node:
    """Control plane + containerd + kubelet + scheduler + kube-proxy + provisioner, under `workdir`."""

    workdir: Path
    control: ControlPlane = field(init=False)
    processes: list[_Process] = field(default_factory=list)
    host: HostState | None = None
    started_at: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    extra_pids: list[int] = field(default_factory=list)
    lock_fd: int | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.control.kubeconfig

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.check_alive()
        return self.control.kubectl(*args, input=input, check=check)

    def env(self) -> dict[str, str]:
        return self.control.env()

    # --- start ----------------------------------------------------------------------------

    def start(self) -> Node:
        require_root_and_tools()
        self.lock_fd = wait_for_other_node(float(os.environ.get("CFO_NODE_WAIT", "0")))
        started = time.monotonic()
        bin_dir = binaries()
        provisioner = provisioner_binary()
        archives = images.all_images()
        self.timings["build"] = time.monotonic() - started
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HostState.record()
        self._record()
        start = time.monotonic()
        try:
            self._bridge()
            self.control = ControlPlane(self.workdir / "control-plane", bin_dir=bin_dir, address=NODE_IP,
                                        for_node=True)
            self.control.start()
            self._record()
            self._containerd()
            self._import(archives)
            self._kubelet(bin_dir)
            self._spawn("kube-scheduler", [
                str(bin_dir / "kube-scheduler"), f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false", f"--secure-port={free_port()}", "--bind-address=127.0.0.1"])
            self._kube_proxy(bin_dir)
            self._wait_node_ready()
            self._provisioner(provisioner)
            self._wait_default_service_account()
        except BaseException:
            self.stop()
            raise
        self.started_at = time.monotonic()
        self.timings["start"] = self.started_at - start
        return self

    def adopt(self, proc: subprocess.Popen[bytes]) -> None:
        """A helper process (a release source, say) that a crashed run's clean-up must also stop."""
        self.extra_pids.append(proc.pid)
        self._record()

    def _record(self) -> None:
        """What a later run needs to clean up if this one is killed before stop()."""
        assert self.host is not None
        pids = [p.proc.pid for p in self.processes] + self.extra_pids
        kubectl = None
        with contextlib.suppress(AttributeError):
            pids += [p.proc.pid for p in self.control.processes]
            kubectl = [str(self.control.kubectl_path), f"--kubeconfig={self.control.kubeconfig}"]
        state_file().parent.mkdir(parents=True, exist_ok=True)
        state_file().write_text(json.dumps({
            "workdir": str(self.workdir), "pids": [[pid, start_ticks(pid)] for pid in pids],
            "sysctls": self.host.sysctls, "existing_paths": self.host.existing_paths, "kubectl": kubectl,
            "containerd_socket": str(self.containerd_socket)}))

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> _Process:
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        log = logs / f"{name}.log"
        with log.open("ab") as fh:
            proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)
        process = _Process(name, proc, log)
        self.processes.append(process)
        self._record()
        return process

    def _bridge(self) -> None:
        """The CNI bridge, made before any pod so the API server can listen on its address."""
        _sh("ip", "link", "add", BRIDGE, "type", "bridge")
        _sh("ip", "addr", "add", f"{NODE_IP}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE)
        _sh("ip", "link", "set", BRIDGE, "up")
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True)
        (cni / "net.d" / "10-cfo.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "cfo",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(cni / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, indent=1))

    def _containerd(self) -> None:
        base = self.workdir / "containerd"
        base.mkdir()
        config = base / "config.toml"
        config.write_text(f"""version = 2
root = "{base / 'root'}"
state = "{base / 'state'}"
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{base / 'containerd.sock.ttrpc'}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  # Nothing can be pulled here: the sandbox is our own pause image, imported like the others.
  sandbox_image = "{images.PAUSE_IMAGE}"
  # The VM's bounding set lacks CAP_SYS_RESOURCE: a negative oom_score_adj cannot be set.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{self.workdir / 'cni' / 'net.d'}"
    max_conf_num = 1
""")
        proc = self._spawn("containerd", ["containerd", "--config", str(config), "--log-level", "warn"])
        wait_ready("containerd", proc.proc, lambda: self._ctr("version", check=False).returncode == 0, 30, proc.log)

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _sh("ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args, check=check)

    def _import(self, archives: list[Path]) -> None:
        started = time.monotonic()
        for archive in archives:
            self._ctr("images", "import", str(archive))
        self.timings["import"] = time.monotonic() - started

    def _node_pki(self) -> dict[str, Path]:
        import datetime as dt

        pki = self.workdir / "kubelet" / "pki"
        pki.mkdir(parents=True)
        now = dt.datetime.now(dt.UTC)
        ca = self.control.ca
        client = issue(ca, LeafSpec(f"system:node:{NODE_NAME}", Usage.CLIENT, organization="system:nodes"), 30, now)
        serving = issue(ca, LeafSpec(NODE_NAME, Usage.SERVER, (NODE_NAME, "localhost"), (NODE_IP, "127.0.0.1")),
                        30, now)
        paths = {}
        for name, pair in (("client", client), ("serving", serving)):
            paths[f"{name}.crt"], paths[f"{name}.key"] = pki / f"{name}.crt", pki / f"{name}.key"
            paths[f"{name}.crt"].write_bytes(pair.cert_pem())
            paths[f"{name}.key"].write_bytes(pair.key_pem())
        paths["ca.crt"] = self.control.workdir / "pki" / "ca.crt"
        return paths

    def _kubelet(self, bin_dir: Path) -> None:
        base = self.workdir / "kubelet"
        pki = self._node_pki()
        kubeconfig = base / "kubeconfig"
        write_kubeconfig(kubeconfig, self.control.server, pki["ca.crt"], pki["client.crt"], pki["client.key"],
                         f"system:node:{NODE_NAME}")
        self.kubelet_healthz = free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": NODE_IP, "port": free_port(NODE_IP), "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": self.kubelet_healthz,
            "tlsCertFile": str(pki["serving.crt"]), "tlsPrivateKeyFile": str(pki["serving.key"]),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki["ca.crt"])}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            # The host is cgroup v1 (hybrid), which kubelet 1.35 refuses unless told; no systemd here.
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
            "podLogsDir": str(base / "pod-logs"), "volumePluginDir": str(base / "volume-plugins"),
            # Imported images can never be pulled again: never collect them.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                             "imagefs.available": "1%"},
            "serializeImagePulls": False, "maxPods": 60,
        }
        (base / "config.yaml").write_text(yaml.safe_dump(config))
        proc = self._spawn("kubelet", [
            str(bin_dir / "kubelet"), f"--config={base / 'config.yaml'}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={base / 'root'}", f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}", "--v=1"])

        wait_ready("kubelet", proc.proc, functools.partial(healthz, self.kubelet_healthz), 60, proc.log)

    def _kube_proxy(self, bin_dir: Path) -> None:
        config = self.workdir / "kube-proxy.yaml"
        self.proxy_healthz = free_port()
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "mode": "iptables", "clusterCIDR": POD_SUBNET, "hostnameOverride": NODE_NAME,
            "healthzBindAddress": f"127.0.0.1:{self.proxy_healthz}", "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # Leave the host's conntrack table settings and route_localnet alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False},
        }))
        proc = self._spawn("kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={config}"])

        wait_ready("kube-proxy", proc.proc, functools.partial(healthz, self.proxy_healthz), 60, proc.log)

    def _wait_node_ready(self) -> None:
        def ready() -> bool:
            result = self.control.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if result.returncode != 0:
                return False
            node = json.loads(result.stdout)
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            taints = [t["key"] for t in node.get("spec", {}).get("taints") or []]
            return conditions.get("Ready") == "True" and not taints

        self.wait("node Ready and untainted", ready, 90)

    def _provisioner(self, binary: Path) -> None:
        """local-path-provisioner as a process, with the ConfigMap it insists on and a StorageClass."""
        volumes = self.workdir / "local-path"
        volumes.mkdir()
        helper = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "helper-pod"},
                  "spec": {"containers": [{"name": "helper-pod", "image": images.APP_IMAGE_ROOT,
                                           "imagePullPolicy": "Never"}]}}
        objects = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROVISIONER_NAMESPACE}},
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "local-path-provisioner", "namespace": PROVISIONER_NAMESPACE}},
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "local-path-config", "namespace": PROVISIONER_NAMESPACE},
             "data": {
                 "config.json": json.dumps({"nodePathMap": [
                     {"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(volumes)]}]}),
                 "setup": '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
                 "teardown": '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
                 "helperPod.yaml": yaml.safe_dump(helper),
             }},
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": STORAGE_CLASS},
             "provisioner": PROVISIONER, "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"},
        ]
        self.control.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
        config = self.workdir / "local-path-config.json"
        config.write_text(objects[2]["data"]["config.json"])  # type: ignore[index]
        proc = self._spawn("local-path-provisioner", [
            str(binary), "--debug", "start", f"--config={config}", f"--kubeconfig={self.kubeconfig}",
            f"--namespace={PROVISIONER_NAMESPACE}",
            f"--provisioner-name={PROVISIONER}", f"--helper-image={images.APP_IMAGE_ROOT}",
            "--configmap-name=local-path-config", "--service-account-name=local-path-provisioner"])
        wait_ready("local-path-provisioner", proc.proc,
                   lambda: "Provisioner started" in proc.log.read_text(errors="replace"), 60, proc.log)

    def _wait_default_service_account(self) -> None:
        self.wait("the default ServiceAccount", lambda: self.control.kubectl(
            "get", "serviceaccount", "default", check=False).returncode == 0, 60)

    # --- while it runs ----------------------------------------------------------------------

    def check_alive(self) -> None:
        """Fail at once, with its log's tail, if any component has died."""
        for process in [*self.processes, *getattr(self.control, "processes", [])]:
            if process.proc.poll() is not None:
                raise ControlPlaneError(f"{process.name} died (exit {process.proc.returncode}):\n{tail(process.log)}")

    def wait(self, what: str, condition: Callable[[], bool], timeout: float, interval: float = 0.3) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if condition():
                    return
            except (OSError, ValueError, ControlPlaneError):
                pass
            time.sleep(interval)
        raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}")

    def restart_apiserver(self, down_seconds: float) -> None:
        """kube-apiserver stopped, and started again after `down_seconds` (same port, etcd and
        flags) while the kubelet, the controllers and the pods keep running; the new process is
        recorded for a crashed run's clean-up."""
        self.control.restart_apiserver(down_seconds)
        self._record()

    def log_tail(self, name: str, lines: int = 40) -> str:
        return tail(self.workdir / "logs" / f"{name}.log", lines)

    # --- stop -------------------------------------------------------------------------------

    def _delete_pods(self) -> None:
        ctl = getattr(self, "control", None)
        kubelet = next((p for p in self.processes if p.name == "kubelet"), None)
        if ctl is None or not ctl.processes or kubelet is None or kubelet.proc.poll() is not None:
            return
        delete_pods_through([str(ctl.kubectl_path), f"--kubeconfig={ctl.kubeconfig}"], str(self.containerd_socket))

    def _remove_tasks(self) -> None:
        """Whatever the kubelet did not stop: kill the tasks; CNI state goes with the netns sweep."""
        if not self.containerd_socket.exists():
            return
        for task in self._ctr("tasks", "ls", "-q", check=False).stdout.split():
            self._ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        time.sleep(0.5)
        for container in self._ctr("containers", "ls", "-q", check=False).stdout.split():
            self._ctr("tasks", "delete", "-f", container, check=False)
            self._ctr("containers", "delete", container, check=False)

    def stop(self) -> None:
        """Pods first (through the API, so the kubelet runs their preStop and frees their network),
        then the node's processes, then what they left on the host.

        Nothing at all when this node never took the lock (it gave up waiting, or was interrupted
        while it waited): the bridge, chains and cgroups on the host are then another running
        node's, and removing them would cut that node's pods off the network."""
        if self.lock_fd is None:
            return
        with contextlib.suppress(Exception):
            self._delete_pods()
        self._stop_processes()
        kill_recorded([[pid, start_ticks(pid) or -1] for pid in self.extra_pids])
        if hasattr(self, "control"):
            self.control.stop()
        remove_network()
        unmount_under(self.workdir)
        remove_cgroups()
        if self.host is not None:
            self.host.restore()
        shutil.rmtree(self.workdir, ignore_errors=True)
        state_file().unlink(missing_ok=True)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def _stop_processes(self) -> None:
        """In dependency order: nothing may start a container once containerd is asked to stop."""
        by_name = {p.name: p for p in self.processes}
        for name in ("local-path-provisioner", "kube-scheduler", "kubelet"):
            if name in by_name:
                terminate(by_name[name].proc, 10)
        with contextlib.suppress(Exception):
            self._remove_tasks()
        if "kube-proxy" in by_name:
            terminate(by_name["kube-proxy"].proc, 10)
            bin_dir = getattr(getattr(self, "control", None), "bin_dir", None)
            if bin_dir:
                _sh(str(bin_dir / "kube-proxy"), "--cleanup", check=False)
        if "containerd" in by_name:
            terminate(by_name["containerd"].proc, 10)
        kill_shims(str(self.workdir))
        for process in self.processes:
            terminate(process.proc, 5)
        self.processes.clear()


def kill_shims(workdir: str) -> None:
    """containerd's shims outlive containerd by design; ours (started under `workdir`) go now."""
    for pid in _sh("pgrep", "-f", f"containerd-shim-runc-v2.*{workdir}", check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def healthz(port: int) -> bool:
    """A component's /healthz on 127.0.0.1:port answers 200."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
        return resp.status == 200


@contextlib.contextmanager
def running_node(workdir: Path) -> Iterator[Node]:
    """A started node that is torn down however the block ends, SIGTERM included."""
    node = Node(workdir)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading_main():
        signal.signal(signal.SIGTERM, on_term)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        if threading_main():
            signal.signal(signal.SIGTERM, previous)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: list[str] | None = None) -> int:
    """`python -m testbed.node hold|lose-kubelet DIR`: a node for tests of the harness itself.

    hold: start, say `node up`, wait for a signal (then tear down). lose-kubelet: start, kill the
    kubelet, and wait for a pod condition that can no longer come: the wait must fail at once.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m testbed.node")
    parser.add_argument("mode", choices=("hold", "lose-kubelet"))
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    with running_node(args.dir) as node:
        print("node up", flush=True)
        if args.mode == "hold":
            signal.pause()
            return 0
        kubelet = next(p for p in node.processes if p.name == "kubelet")
        kubelet.proc.kill()
        try:
            node.wait("a condition only a kubelet could bring", lambda: False, 600)
        except ControlPlaneError as err:
            print(f"wait failed: {err}", flush=True)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
