"""Release v2 under load three ways, side by side, in one run, on the real node.

    .venv/bin/python -m bench.release_strategies [--pods 4] [--rate 150] [--runs 3]

Everything is real: the kubelet, containerd, the Deployment controller, EndpointSlices and
kube-proxy (testbed/node.py). Same app (Debian's Puma 5.6, 2 workers per pod, the same
Rack app and config), same constant open-loop POST load through the Service's ClusterIP (a
POST is never retried, so every dropped request shows). Nothing is simulated: what the real
components do is what is measured.

1. native rolling update, defaults: a real change of the pod template (the release is an env
   var of the container; the code comes from a ConfigMap), maxSurge 25%, maxUnavailable 25%,
   no readiness probe, no preStop.
2. the same with the usual fixes: a readiness probe (every second) and a preStop sleep of
   --pre-stop seconds (default 15), with a grace period longer than both.
3. ours, in place: the product installed by `cfo-admin install`, an opted-in Deployment,
   `kubectl annotate … release=v2`, until the rollout annotation says Complete.

Reported per strategy (medians of --runs): failed requests; p50, p99 and max latency before and
during the release and their ratio; release wall time; peak extra pods; peak extra Puma
processes; and the CPU seconds the release cost the cluster (CPU used by every pod and by the
node's components during the release, minus their rate under the same load before it), beside
how busy the whole machine was under that load. JSON and a PNG chart go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from customer_friendly.agent.puma import read_processes
from testbed import images
from testbed.load import Load, Sample
from testbed.node import Node, running_node
from testbed.node_app import GOOD_APP, PUMA_CONFIG, PUMA_PORT, Peaks, Product, Sources, WebApp, node_release

RESULTS = Path(os.environ.get("CFO_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
STRATEGIES = ("native rolling update", "native + readiness, preStop", "ours, in place, no surge",
              "ours, in place")
"""The last is our default: a phased restart with one surge worker per pod (worker-surge)."""


@dataclass
class Result:
    strategy: str
    sent: int
    failed: int
    p50_before_ms: float
    p99_before_ms: float
    max_before_ms: float
    p50_during_ms: float
    p99_during_ms: float
    max_during_ms: float
    release_seconds: float
    extra_pods: int
    extra_puma_processes: int
    release_cpu_seconds: float
    baseline_cpu_percent: float


def quantile(samples: list[Sample], q: float) -> float:
    values = sorted(s.latency for s in samples if s.ok)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def process_cpu_seconds(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cluster_cpu_seconds(node: Node) -> float:
    """CPU seconds the cluster has used: every pod (the kubepods cgroup's accounting) plus the
    node's own components (kubelet, containerd, API server, controller-manager, kube-proxy...).
    The load generator and whatever else the machine runs do not count."""
    pods = Path("/sys/fs/cgroup/cpuacct/kubepods/cpuacct.usage")
    total = int(pods.read_text()) / 1e9 if pods.is_file() else 0.0
    components = [*node.processes, *node.control.processes]
    return total + sum(process_cpu_seconds(p.proc.pid) for p in components)


def busy_fraction() -> float:
    """How busy the whole machine is now (all cores), over a short look at /proc/stat."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields[:8]) - fields[3] - fields[4], sum(fields[:8])

    busy0, total0 = sample()
    time.sleep(1.0)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


def puma_processes() -> int:
    """Puma masters and workers on the node (every pod's processes are visible from the host)."""
    return sum(1 for p in read_processes() if p.title.startswith("puma"))


def native_objects(namespace: str, pods: int, release: str, fixes: bool, pre_stop: int) -> list[dict[str, Any]]:
    """A plain Deployment: the code in a ConfigMap, the release an env var of the container."""
    code = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "code", "namespace": namespace},
            "data": {"config.ru": GOOD_APP.format(release="@").replace('"@"', 'ENV.fetch("RELEASE")'),
                     "puma.rb": PUMA_CONFIG.format(workers=2, port=PUMA_PORT).replace(
                         'directory "/app/current"', 'directory "/app/code"')}}
    container: dict[str, Any] = {
        "name": "puma", "image": images.APP_IMAGE_ROOT, "imagePullPolicy": "Never",
        "command": ["puma", "-C", "/app/code/puma.rb"], "env": [{"name": "RELEASE", "value": release}],
        "ports": [{"name": "http", "containerPort": PUMA_PORT}],
        "volumeMounts": [{"name": "code", "mountPath": "/app/code"}],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
    }
    spec: dict[str, Any] = {"containers": [container], "volumes": [{"name": "code", "configMap": {"name": "code"}}]}
    if fixes:
        container["readinessProbe"] = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": pre_stop}}}
        spec["terminationGracePeriodSeconds"] = pre_stop + 15
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
                  "spec": {"replicas": pods, "selector": {"matchLabels": {"app": "web"}},
                           "strategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                           "template": {"metadata": {"labels": {"app": "web"}}, "spec": spec}}}
    return [code, deployment]


class Bench:
    def __init__(self, node: Node, product: Product, args: argparse.Namespace) -> None:
        self.node, self.product, self.args = node, product, args
        self.count = 0

    def _app(self) -> WebApp:
        self.count += 1
        return WebApp(self.node, self.product, f"bench-{self.count}", replicas=self.args.pods)

    def measure(self, name: str, app: WebApp, release: Callable[[], None], done: Callable[[], bool]) -> Result:
        app.wait_serving("v1", timeout=120)
        base_puma = puma_processes()
        load = Load(app.cluster_ip(), 80, rate=self.args.rate).start()
        machine = busy_fraction()
        cpu_start, clock_start = cluster_cpu_seconds(self.node), time.monotonic()
        time.sleep(self.args.baseline)
        baseline_rate = (cluster_cpu_seconds(self.node) - cpu_start) / (time.monotonic() - clock_start)
        with Peaks(pods=lambda: len(app.pods()), puma=puma_processes) as peaks:
            cpu, started = cluster_cpu_seconds(self.node), time.monotonic()
            release()
            self.node.wait(f"{name} to finish", done, 600, interval=0.2)
            finished = time.monotonic()
            spent = cluster_cpu_seconds(self.node) - cpu - baseline_rate * (finished - started)
        time.sleep(1)
        load.stop()
        before = [s for s in load.samples if s.sent_at < started]
        during = load.between(started, finished)
        return Result(name, len(load.samples), len(load.failures()), quantile(before, .5), quantile(before, .99),
                      quantile(before, 1), quantile(during, .5), quantile(during, .99), quantile(during, 1),
                      finished - started, max(0, peaks.peak["pods"] - self.args.pods),
                      max(0, peaks.peak["puma"] - base_puma), spent, 100 * machine)

    def native(self, fixes: bool) -> Result:
        app = self._app()
        app.prepare()
        objects = native_objects(app.namespace, self.args.pods, "v1", fixes, self.args.pre_stop)
        self.node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
        app.wait_ready(timeout=180)

        def release() -> None:
            app.kubectl("set", "env", "deployment/web", "-c", "puma", "RELEASE=v2")

        def done() -> bool:
            status = app.deployment().get("status") or {}
            pods = app.pods()
            return (status.get("updatedReplicas") == status.get("availableReplicas") == self.args.pods
                    and len(pods) == self.args.pods
                    and all(ct.get("value") == "v2" for p in pods for ct in p["spec"]["containers"][0]["env"]))

        try:
            return self.measure(STRATEGIES[1 if fixes else 0], app, release, done)
        finally:
            self.remove(app)

    def ours(self, surge: bool = True) -> Result:
        app = self._app()
        app.deploy("v1", annotations={"customer-friendly.dev/max-unavailable": "50%",
                                      "customer-friendly.dev/worker-surge": "true" if surge else "false"})

        def release() -> None:
            app.kubectl("annotate", "deployment", "web", "customer-friendly.dev/release=v2", "--overwrite")

        def done() -> bool:
            rollout = app.rollout()
            return rollout.get("release") == "v2" and rollout.get("phase") == "Complete" and not rollout.get("batch")

        try:
            return self.measure(STRATEGIES[3 if surge else 2], app, release, done)
        finally:
            self.remove(app)

    def remove(self, app: WebApp) -> None:
        """The next strategy starts on an idle node: wait until this one's pods are gone."""
        self.node.kubectl("delete", "namespace", app.namespace, "--wait=false")
        self.node.wait("the strategy's pods to go", lambda: not app.pods(), 180)


# --- report ------------------------------------------------------------------------------------

def median_result(results: list[Result]) -> Result:
    fields = asdict(results[0])
    merged: dict[str, Any] = {
        k: (results[0].strategy if k == "strategy" else statistics.median(getattr(r, k) for r in results))
        for k in fields}
    return Result(**merged)


def table(rows: list[Result]) -> str:
    head = (f"{'strategy':28} {'sent':>6} {'failed':>6} {'p50 ms':>13} {'p99 ms':>14} {'max ms':>15} "
            f"{'release s':>9} {'+pods':>5} {'+puma':>5} {'CPU s':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        def pair(before: float, during: float) -> str:
            return f"{during:6.1f} x{during / before:4.1f}" if before else f"{during:6.1f}"
        lines.append(f"{r.strategy:28} {r.sent:>6.0f} {r.failed:>6.0f} {pair(r.p50_before_ms, r.p50_during_ms):>13} "
                     f"{pair(r.p99_before_ms, r.p99_during_ms):>14} {pair(r.max_before_ms, r.max_during_ms):>15} "
                     f"{r.release_seconds:>9.1f} {r.extra_pods:>5.0f} {r.extra_puma_processes:>5.0f} "
                     f"{r.release_cpu_seconds:>6.1f}")
    lines.append("latency: during the release, x = during/before; +pods/+puma: peak surge; CPU s: the cluster's "
                 "CPU the release added")
    ours, native = rows[-1], rows[0]
    if native.release_seconds and ours.release_seconds:
        lines.append(f"ours vs native defaults: release time x{ours.release_seconds / native.release_seconds:.2f}, "
                     f"p99 during x{ours.p99_during_ms / native.p99_during_ms:.2f}, "
                     f"failed {ours.failed:.0f} vs {native.failed:.0f}")
    lines.append("whole machine busy under the load before each release (medians): "
                 + ", ".join(f"{r.strategy} {r.baseline_cpu_percent:.0f}%" for r in rows))
    return "\n".join(lines)


def chart(rows: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(20, 3.8))
    names = [r.strategy.replace(", ", ",\n").replace(" + ", "\n+ ") for r in rows]
    for ax, (title, values) in zip(axes, [
        ("failed requests", [r.failed for r in rows]),
        ("p99 during release (ms)", [r.p99_during_ms for r in rows]),
        ("release wall time (s)", [r.release_seconds for r in rows]),
        ("peak extra pods", [r.extra_pods for r in rows]),
        ("CPU seconds of the release", [r.release_cpu_seconds for r in rows]),
    ], strict=True):
        ax.bar(names, values, color=["#c0504d", "#f79646", "#9bbb59", "#4f81bd"][: len(rows)])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("Release v2 under a constant POST load through a ClusterIP, on a real node (medians)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--rate", type=float, default=150.0, help="POST requests per second")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pre-stop", type=int, default=15, help="preStop sleep of the fixed native rollout")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of load before each release")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cfo-bench-") as tmp, running_node(Path(tmp) / "node") as node:
        sources = Sources(Path(tmp) / "sources").start()
        for proc in sources.processes():
            node.adopt(proc)
        try:
            for release in ("v1", "v2"):
                sources.publish(release, node_release(release))
            bench = Bench(node, Product(node, sources, Path(tmp) / "product").install(), args)
            runs: dict[str, list[Result]] = {}
            for i in range(args.runs):
                for runner in (lambda: bench.native(False), lambda: bench.native(True),
                               lambda: bench.ours(surge=False), bench.ours):
                    result = runner()
                    runs.setdefault(result.strategy, []).append(result)
                    print(f"run {i + 1}/{args.runs} {result.strategy}: failed {result.failed} of {result.sent}, "
                          f"release {result.release_seconds:.1f}s", file=sys.stderr, flush=True)
        finally:
            sources.stop()
    rows = [median_result(runs[name]) for name in STRATEGIES]
    print(table(rows))
    (RESULTS / "release_strategies.json").write_text(json.dumps(
        {"args": vars(args), "node": "real kubelet, containerd, kube-proxy (testbed/node.py)",
         "medians": [asdict(r) for r in rows], "runs": {k: [asdict(r) for r in v] for k, v in runs.items()}},
        indent=2))
    chart(rows, RESULTS / "release_strategies.png")
    print(f"\nwrote {RESULTS / 'release_strategies.json'} and {RESULTS / 'release_strategies.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
