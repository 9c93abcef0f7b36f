"""How the controller scales: time to Complete, peak memory and API requests per pod.

    .venv/bin/python -m bench.controller_scale [--quick]

On a real control plane (etcd, kube-apiserver, kube-controller-manager creating the pods),
with the real controller process. The agents are STAND-INS: one small mutual-TLS server
answering for every pod's loopback address (127.x.y.z) and pretending that a restart takes
--restart-seconds. This measures the controller, not Puma (the other benchmarks do that).
It also writes each pod's status (Running, an IP) as a kubelet would: 1000 real pods cannot run
on the 2-core machine the real node has (testbed/node.py), so this one benchmark keeps a
stand-in for scale, and its README table says so. Every other figure comes from the real node.

Scenarios: one Deployment of 200 pods at max-unavailable 25%; then D Deployments of 5 pods
each released at once, for D = 10, 40, 200 and 1000 (50 to 5000 pods): the growth curve.
`--sizes` picks the values of D (and `--quick` runs 50-pod scenarios only).

API requests per pod are the controller's own count (cfo_controller_api_requests_total, every
request it makes: reads, writes, events, and its caches' lists and watches) during the
release, divided by the pods released. Peak RSS is the controller process's high-water mark
(VmHWM) after the scenario: the one process runs every scenario in turn, and keeps the pods
of the earlier ones in its caches, so it is cumulative.

The results go to bench/results/controller_scale.json and .png; the chart sets them beside
bench/results/controller_scale_before.json: the controller before its caches, as committed at
6d0fe32, when this benchmark polled completion with a GET per Deployment every 0.5 s (it now
watches). `--controller-path` measures another version of the controller with this one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines

from testbed.controlplane import ROOT, ControlPlane, free_port, terminate
from testbed.webhook import ensure_certs

RESULTS = Path(os.environ.get("CFO_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
BEFORE = Path(__file__).resolve().parent / "results" / "controller_scale_before.json"
SOURCE = "file:///releases/{release}.tar.gz"


class StandInAgents:
    """Answers /v1/status and /v1/release for any pod IP, keyed by the address dialled."""

    def __init__(self, certs: Path, port: int, restart_seconds: float) -> None:
        self.state: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        agents = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _pod(self) -> dict[str, Any]:
                ip = self.connection.getsockname()[0]
                with agents.lock:
                    return agents.state.setdefault(ip, {"state": "idle", "target": None, "release": "v1"})

            def do_GET(self) -> None:
                self._send(200, dict(self._pod()))

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                pod = self._pod()
                with agents.lock:
                    if pod["release"] == body["release"] and pod["state"] in ("idle", "done"):
                        self._send(200, dict(pod))
                        return
                    pod.update(state="restarting", target=body["release"])

                def finish() -> None:
                    with agents.lock:
                        pod.update(state="done", release=body["release"])

                threading.Timer(restart_seconds, finish).start()
                self._send(202, dict(pod))

        self.server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs / "webhook.crt", certs / "webhook.key")
        context.load_verify_locations(certs / "ca.crt")
        context.verify_mode = ssl.CERT_REQUIRED
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


def ip_for(index: int) -> str:
    return f"127.{1 + index // 62500}.{(index // 250) % 250 + 1}.{index % 250 + 1}"


class Bench:
    def __init__(self, work: Path, restart_seconds: float) -> None:
        self.work = work
        self.cluster = ControlPlane(work / "cluster").start()
        self.api = config.new_client_from_config(config_file=str(self.cluster.kubeconfig))
        self.apps, self.core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        self.certs = work / "certs"
        ensure_certs(self.certs)
        self.agent_port = free_port()
        self.agents = StandInAgents(self.certs, self.agent_port, restart_seconds)
        self.metrics_port = free_port()
        self.controller: subprocess.Popen[bytes] | None = None
        self.next_ip = 0

    def start_controller(self, workers: int | None = None, path: Path | None = None) -> None:
        """The controller as a process; from `path` (a tree holding customer_friendly/<component>)
        when given, to measure another version of it with the same benchmark."""
        log = (self.work / "controller.log").open("ab")
        env = {**os.environ, "PYTHONPATH": str(path)} if path else None
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "customer_friendly.controller", "--kubeconfig", str(self.cluster.kubeconfig),
             "--cert", str(self.certs / "controller.crt"), "--key", str(self.certs / "controller.key"),
             "--metrics-port", str(self.metrics_port), "--metrics-bind", "127.0.0.1", "--no-leader-election",
             "--agent-port", str(self.agent_port), "--log-level", "warning"]
            + (["--workers", str(workers)] if workers else []),
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    def peak_rss_mib(self) -> float:
        assert self.controller is not None
        status = Path(f"/proc/{self.controller.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]

    def create(self, namespace: str, count: int, replicas: int, max_unavailable: str) -> list[str]:
        self.core.create_namespace({"metadata": {"name": namespace}})
        names = [f"app-{i}" for i in range(count)]

        def create(name: str) -> None:
            self.apps.create_namespaced_deployment(namespace, {
                "metadata": {"name": name, "annotations": {
                    "customer-friendly.dev/enabled": "true", "customer-friendly.dev/release": "v1",
                    "customer-friendly.dev/source": SOURCE, "customer-friendly.dev/max-unavailable": max_unavailable,
                    "customer-friendly.dev/canary": "1"}},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "puma", "image": "acme/web"}]}}}}, _preload_content=False)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, names))
        want = count * replicas
        deadline = time.monotonic() + 1200
        pods: list[str] = []
        while time.monotonic() < deadline:
            pods = [p["metadata"]["name"] for p in self.raw(self.core.list_namespaced_pod, namespace)]
            if len(pods) >= want:
                break
            time.sleep(1)
        print(f"  {len(pods)} pods created in {namespace}", flush=True)

        # Play the kubelet: every pod Running and Ready on its own loopback address.
        def ready(pod: str) -> None:
            ip = ip_for(self.next_ip_take())
            self.core.patch_namespaced_pod_status(pod, namespace, {"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": "True"}]}}, _preload_content=False)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(ready, pods))
        return names

    @staticmethod
    def raw(list_call: Any, namespace: str) -> list[dict[str, Any]]:
        """A list as the API's JSON: thousands of objects are too slow through the client's models."""
        return json.loads(list_call(namespace, _preload_content=False).data).get("items") or []

    _ip_lock = threading.Lock()

    def next_ip_take(self) -> int:
        with self._ip_lock:
            self.next_ip += 1
            return self.next_ip

    def wait_complete(self, namespace: str, names: list[str], release: str, replicas: int,
                      timeout: float = 1800) -> int:
        """Until every Deployment's rollout record says Complete on `release` with all its pods: one
        list, then a watch of the namespace's Deployments (polling a thousand of them would load
        the machine the controller runs on, and measure to the poll's interval). The number not
        Complete when `timeout` ran out (0: all were)."""
        pending = set(names)
        deadline = time.monotonic() + timeout

        def seen(deployment: dict[str, Any]) -> None:
            annotations = deployment["metadata"].get("annotations") or {}
            r = json.loads(annotations.get("customer-friendly.dev/rollout") or "{}")
            if r.get("release") == release and r.get("phase") == "Complete" and r.get("updated") == replicas:
                pending.discard(deployment["metadata"]["name"])

        def relist() -> str:
            listed = json.loads(self.apps.list_namespaced_deployment(namespace, _preload_content=False).data)
            for deployment in listed.get("items") or []:
                seen(deployment)
            return str(listed["metadata"]["resourceVersion"])

        version = relist()
        while pending and time.monotonic() < deadline:
            response = self.apps.list_namespaced_deployment(
                namespace, watch=True, resource_version=version, timeout_seconds=30, allow_watch_bookmarks=True,
                _preload_content=False)
            try:
                for line in iter_resp_lines(response):
                    event = json.loads(line)
                    if event["type"] == "ERROR":  # 410 Gone: list again
                        version = relist()
                        break
                    version = event["object"].get("metadata", {}).get("resourceVersion") or version
                    if event["type"] in ("ADDED", "MODIFIED"):
                        seen(event["object"])
                    if not pending or time.monotonic() > deadline:
                        break
            finally:
                response.close()
        return len(pending)

    def scenario(self, label: str, count: int, replicas: int, max_unavailable: str) -> dict[str, Any]:
        namespace = f"s-{count}x{replicas}"
        names = self.create(namespace, count, replicas, max_unavailable)
        self.wait_complete(namespace, names, "v1", replicas)
        calls_before = self.metric("cfo_controller_api_requests_total")
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: self.apps.patch_namespaced_deployment(
                n, namespace, {"metadata": {"annotations": {"customer-friendly.dev/release": "v2"}}},
                _preload_content=False), names))
        incomplete = self.wait_complete(namespace, names, "v2", replicas)
        elapsed = time.monotonic() - started
        pods = count * replicas
        calls = self.metric("cfo_controller_api_requests_total") - calls_before
        row = {"scenario": label, "deployments": count, "pods": pods, "seconds": elapsed,
               "pods_per_second": pods / elapsed, "api_requests_per_pod": calls / pods,
               "controller_peak_rss_mib": self.peak_rss_mib(), "incomplete": incomplete}
        print(f"{label:38} {pods:>5} pods {elapsed:>7.1f} s {pods / elapsed:>7.1f} pods/s "
              f"{calls / pods:>6.1f} API req/pod {row['controller_peak_rss_mib']:>7.1f} MiB peak RSS"
              + (f"  ({incomplete} Deployments NOT Complete)" if incomplete else ""), flush=True)
        return row

    def stop(self) -> None:
        terminate(self.controller, 10)
        self.agents.stop()
        self.cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50-pod scenarios only")
    parser.add_argument("--restart-seconds", type=float, default=0.3, help="stand-in agents' restart time")
    parser.add_argument("--sizes", default="10,40,200,1000",
                        help="numbers of 5-pod Deployments released at once, one scenario each")
    parser.add_argument("--no-single", action="store_true", help="leave out the one-Deployment scenario")
    parser.add_argument("--workers", type=int, default=None, help="the controller's --workers (default: its own)")
    parser.add_argument("--controller-path", type=Path, default=None,
                        help="run the controller from this tree (customer_friendly/<component>, e.g. unpacked from "
                             "`git archive <commit> contract controller certs agent`), to measure another version")
    parser.add_argument("--out", default="controller_scale.json", help="results file name in the results folder")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cfo-bench-scale-") as tmp:
        bench = Bench(Path(tmp), args.restart_seconds)
        try:
            bench.start_controller(args.workers, args.controller_path)
            big = 50 if args.quick else 200
            if not args.no_single:
                rows.append(bench.scenario(f"1 Deployment x {big} pods, 25%", 1, big, "25%"))
            for count in ((10,) if args.quick else tuple(int(n) for n in args.sizes.split(","))):
                rows.append(bench.scenario(f"{count} Deployments x 5 pods at once", count, 5, "50%"))
        finally:
            bench.stop()
    out = RESULTS / args.out
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nagents are stand-ins (restart {args.restart_seconds}s each); wrote {out}")
    if args.controller_path is None:
        before = json.loads(BEFORE.read_text()) if BEFORE.exists() else []
        chart(rows, before, out.with_suffix(".png"))
        print(f"and {out.with_suffix('.png')}")
    return 0


def chart(rows: list[dict[str, Any]], before: list[dict[str, Any]], path: Path) -> None:
    """Seconds to Complete against pods, for the many-Deployments scenarios: now and before."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, series, style in (("before (4 workers, a GET per poll)", before, "o--"),
                                 ("with caches, 16 workers", rows, "o-")):
        points = sorted((r["pods"], r["seconds"]) for r in series if r["deployments"] > 1)
        if points:
            ax.plot([p for p, _ in points], [s for _, s in points], style, label=label)
            for pods, seconds in points:
                ax.annotate(f"{seconds:.1f} s", (pods, seconds), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
    ax.set_xlabel("pods released at once (Deployments of 5 pods)")
    ax.set_ylabel("seconds to Complete")
    ax.set_title("controller scale (stand-in agents, 0.3 s restart)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
