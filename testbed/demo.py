"""`make demo`: an in-place release under load on a real single-node cluster, in a few minutes.

It starts the real node (containerd, a kubelet, the control plane, kube-proxy, a dynamic
provisioner), imports our images built from images/Dockerfile, installs the product with
`cfo-admin install` exactly as on EKS, deploys a 3-pod Puma app opted in to in-place
releases behind a ClusterIP Service, puts a constant POST load on that ClusterIP, releases v2
with `kubectl cfo release --wait`, reports what the users saw and what only a real node can
show (pod UIDs, container restarts, ReplicaSets), then releases a v3 that cannot boot and shows
it stopped at the canary and rolled back. Everything is torn down at the end. Needs root.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from customer_friendly import contract as c
from testbed import images
from testbed.controlplane import ROOT
from testbed.load import Load, Sample
from testbed.node import Node, running_node
from testbed.node_app import PUMA_PORT, Peaks, Product, Sources, WebApp, node_release

NAMESPACE = "shop"
REPLICAS = 3
RATE = 100.0


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def percentile(samples: list[Sample], q: int) -> float:
    latencies = sorted(s.latency for s in samples)
    if len(latencies) < 2:
        return float("nan")
    return statistics.quantiles(latencies, n=100)[q - 1] * 1000


def example(source: str) -> dict:
    """examples/web.yaml with what this node has: our app image, v1 and a reachable source."""
    app = yaml.safe_load((ROOT / "examples" / "web.yaml").read_text())
    app["metadata"]["namespace"] = NAMESPACE
    notes = app["metadata"]["annotations"]
    notes[c.SOURCE], notes[c.RELEASE], notes[c.MAX_UNAVAILABLE] = source, "v1", "1"
    notes[c.PRE_STOP_SECONDS] = "3"
    puma = app["spec"]["template"]["spec"]["containers"][0]
    puma.update({"image": images.APP_IMAGE_ROOT, "imagePullPolicy": "Never",
                 "command": ["puma", "-C", "config/puma.rb"]})
    puma["readinessProbe"]["httpGet"]["path"] = "/"
    puma["ports"][0]["containerPort"] = PUMA_PORT
    return app


@dataclass
class Outcome:
    code: int
    load: Load
    started: float
    finished: float
    replaced: set[str]
    restarts: int
    new_replicasets: int
    extra_pods: int


class Demo:
    def __init__(self, node: Node, workdir: Path) -> None:
        self.node = node
        self.sources = Sources(workdir / "sources")
        self.product = Product(node, self.sources, workdir / "product")
        self.app = WebApp(node, self.product, NAMESPACE, replicas=REPLICAS)

    def cfo(self, *args: str) -> int:
        """`kubectl cfo …` as a user types it: kubectl finds the plugin on PATH."""
        env = self.node.env()
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        print(f"$ kubectl cfo -n {NAMESPACE} {' '.join(args)}", flush=True)
        return subprocess.run([str(self.node.control.kubectl_path), "cfo", "-n", NAMESPACE, *args], env=env,
                              check=False).returncode

    def setup(self) -> None:
        timings = self.node.timings
        print(f"node up in {timings['start']:.0f}s (images imported in {timings['import']:.0f}s); "
              f"binaries and images checked in {timings['build']:.0f}s")
        self.sources.start()
        for proc in self.sources.processes():
            self.node.adopt(proc)
        for release in ("v1", "v2"):
            self.sources.publish(release, node_release(release))
        self.sources.publish("v3", node_release("v3", broken=True))
        print(f"releases v1, v2 and v3 (v3 cannot boot) published to {self.sources.s3()} (S3 from moto)")

        step("cfo-admin install --registry cfo.local --set storageClass=local-path --set agentEnv=... (S3 endpoint)")
        started = time.monotonic()
        self.product.install()
        for component in ("webhook", "controller"):
            names = [p["metadata"]["name"] for p in self.product.pods(component)]
            print(f"  {component}: {', '.join(names)}")
        print(f"installed and available in {time.monotonic() - started:.0f}s")

        step(f"kubectl apply -f examples/web.yaml (release v1, {REPLICAS} replicas, a ClusterIP Service)")
        created = self.app.create(example(self.sources.s3()))
        print(created.stdout.strip())
        spec = self.app.deployment()["spec"]["template"]["spec"]
        puma = spec["containers"][0]
        print(f"the webhook injected: initContainers {[i['name'] for i in spec['initContainers']]}, "
              f"volumes {[v['name'] for v in spec['volumes']]}, shareProcessNamespace "
              f"{spec['shareProcessNamespace']}, preStop {puma['lifecycle']['preStop']}, "
              f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']}")
        started = time.monotonic()
        pods = self.app.wait_ready(serving="v1")
        print(f"{len(pods)} pods ready in {time.monotonic() - started:.0f}s, each with its own provisioned volume:")
        for pod in pods:
            print(f"  {pod['metadata']['name']}  {pod['status']['podIP']}  current -> {self.app.links(pod)[0]}  "
                  f"volume {self.app.volume(pod)}")
        self.app.wait_rollout("v1", ("Complete",))
        print(f"Service web: ClusterIP {self.app.cluster_ip()}:80, through kube-proxy")

    def release_under_load(self, release: str) -> Outcome:
        uids, sets = self.app.uids(), self.app.replicasets()
        restarts = sum(self.app.restarts().values())
        with Peaks(pods=lambda: len(self.app.pods())) as peaks:
            load = Load(self.app.cluster_ip(), 80, rate=RATE).start()
            time.sleep(3)
            started = time.monotonic()
            code = self.cfo("release", "web", release, "--wait")
            finished = time.monotonic()
            time.sleep(2)
            load.stop()
        return Outcome(code, load, started, finished, set(uids.values()) - set(self.app.uids().values()),
                       sum(self.app.restarts().values()) - restarts, len(set(self.app.replicasets()) - set(sets)),
                       peaks.peak["pods"] - REPLICAS)

    @staticmethod
    def report(title: str, outcome: Outcome) -> int:
        load = outcome.load
        before = [s for s in load.samples if s.sent_at < outcome.started]
        during = load.between(outcome.started, outcome.finished)
        failed = load.failures()
        print(f"\n  {title}")
        print(f"  requests sent          {len(load.samples):>8}   (constant {RATE:.0f}/s POST to the ClusterIP)")
        print(f"  requests failed        {len(failed):>8}")
        print(f"  p50 before / during    {percentile(before, 50):>7.1f} ms / {percentile(during, 50):.1f} ms")
        print(f"  p99 before / during    {percentile(before, 99):>7.1f} ms / {percentile(during, 99):.1f} ms")
        print(f"  release took           {outcome.finished - outcome.started:>7.1f} s")
        print(f"  pods replaced          {len(outcome.replaced):>8}   (pod UIDs before and after)")
        print(f"  container restarts     {outcome.restarts:>8}   (restartCount of every container)")
        print(f"  new ReplicaSets        {outcome.new_replicasets:>8}")
        print(f"  extra pods             {outcome.extra_pods:>8}   (peak pod count minus replicas)")
        return len(failed)

    def run(self) -> int:
        self.setup()
        step("Release v2 under load: kubectl cfo release web v2 --wait")
        v2 = self.release_under_load("v2")
        failed_v2 = self.report("release v2", v2)
        step("Release a broken v3 under load: the canary fails and everything rolls back")
        v3 = self.release_under_load("v3")
        failed_v3 = self.report("release v3 (cannot boot)", v3)
        step("kubectl cfo status web / history web")
        self.cfo("status", "web")
        self.cfo("history", "web")
        changed = [len(o.replaced) + o.restarts + o.new_replicasets + o.extra_pods for o in (v2, v3)]
        ok = v2.code == 0 and v3.code == 1 and failed_v2 == failed_v3 == 0 and changed == [0, 0]
        step(f"Demo {'passed' if ok else 'FAILED'}: v2 exit {v2.code}, v3 exit {v3.code} (1 = rolled back), "
             f"failed requests {failed_v2} + {failed_v3}, pods replaced {len(v2.replaced) + len(v3.replaced)}, "
             f"restarts {v2.restarts + v3.restarts}")
        return 0 if ok else 1


def main() -> int:
    step("Starting a real single-node cluster: containerd, kubelet, control plane, kube-proxy, provisioner")
    with tempfile.TemporaryDirectory(prefix="cfo-demo-") as tmp, running_node(Path(tmp) / "node") as node:
        demo = Demo(node, Path(tmp))
        try:
            return demo.run()
        finally:
            demo.sources.stop()


if __name__ == "__main__":
    sys.exit(main())
