"""`make demo`: an in-place release under load, on a real local control plane, in about a minute.

It starts etcd, kube-apiserver and kube-controller-manager, the webhook (gunicorn, TLS,
registered from manifests/) and the controller (as a user bound to the manifests' RBAC),
deploys a 3-pod Puma app (real Puma behind a real agent on 127.0.0.x per pod, nginx in
front), puts a constant POST load on it, releases v2 with `kubectl cfo release --wait`,
reports what the users saw, then releases a broken v3 and shows the automatic rollback.
Everything is torn down at the end.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

import contract as c
from tests.harness.controlplane import ROOT, ControlPlane
from tests.harness.fleet import ControllerProcess, Kubelet, Nginx
from tests.harness.load import Load, Sample
from tests.harness.puma_app import publish, release_archive
from tests.harness.webhook import WebhookServer, ensure_certs, register

NAMESPACE = "shop"
REPLICAS = 3
RATE = 200.0


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def percentile(samples: list[Sample], q: int) -> float:
    latencies = sorted(s.latency for s in samples)
    if len(latencies) < 2:
        return float("nan")
    return statistics.quantiles(latencies, n=100)[q - 1] * 1000


def manifest(artifacts: Path) -> dict[str, Any]:
    app = yaml.safe_load((ROOT / "examples" / "web.yaml").read_text())
    app["metadata"]["annotations"][c.SOURCE] = f"file://{artifacts}/{{release}}.tar.gz"
    app["metadata"]["annotations"][c.RELEASE] = "v1"
    app["metadata"]["annotations"][c.MAX_UNAVAILABLE] = "1"
    return app


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cluster = ControlPlane(workdir / "cluster")
        self.webhook = WebhookServer(workdir / "webhook")
        self.certs = workdir / "certs"
        self.artifacts = workdir / "artifacts"
        self.controller: ControllerProcess | None = None
        self.kubelet: Kubelet | None = None
        self.nginx: Nginx | None = None

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", NAMESPACE, *args, **kwargs)

    def cfo(self, *args: str) -> int:
        """`kubectl cfo …` as a user types it: kubectl finds the plugin on PATH."""
        env = self.cluster.env()
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        print(f"$ kubectl cfo -n {NAMESPACE} {' '.join(args)}", flush=True)
        return subprocess.run([str(self.cluster.kubectl_path), "cfo", "-n", NAMESPACE, *args], env=env,
                              check=False).returncode

    def pods(self) -> list[dict[str, Any]]:
        return json.loads(self.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]

    def setup(self) -> None:
        step(f"Starting a real control plane: etcd, kube-apiserver, kube-controller-manager ({self.workdir})")
        self.cluster.start()
        step("Starting the webhook and registering manifests/base/mutatingwebhook.yaml")
        self.webhook.start()
        register(self.cluster, self.webhook)
        step("Starting the controller (RBAC from manifests/base/controller-rbac.yaml, Lease leader election)")
        ensure_certs(self.certs)
        self.controller = ControllerProcess(self.cluster, self.workdir / "controller", self.certs).start()
        for release in ("v1", "v2"):
            publish(self.artifacts, release, release_archive(release))
        publish(self.artifacts, "v3", release_archive("v3", broken=True))
        print(f"releases v1, v2 and v3 (v3 cannot boot) published under {self.artifacts}")

        step("kubectl apply -f examples/web.yaml (release v1, 3 replicas)")
        self.cluster.kubectl("create", "namespace", NAMESPACE)
        applied = self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest(self.artifacts)))
        print(applied.stdout.strip())
        template = json.loads(self.kubectl("get", "deployment", "web", "-o", "json").stdout)["spec"]["template"]
        spec = template["spec"]
        puma = spec["containers"][0]
        print(f"the webhook injected: initContainers {[i['name'] for i in spec['initContainers']]}, "
              f"volume {[v['name'] for v in spec['volumes']]}, shareProcessNamespace "
              f"{spec['shareProcessNamespace']}, preStop {puma['lifecycle']['preStop']}, "
              f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']}")

        step("Playing the kubelet: each pod runs its init step, then Puma and the agent on 127.0.0.x")
        self.kubelet = Kubelet(self.cluster, NAMESPACE, self.workdir / "pods", self.certs / "ca.crt")
        started = self.kubelet.sync("app=web", REPLICAS)
        for pod in started:
            print(f"  {pod.name}: {pod.ip}  Puma :{pod.puma.port}  agent :{pod.agent.port}")
        self.nginx = Nginx(self.workdir / "nginx").start([p.puma.port for p in started])
        print(f"nginx balances the Pumas on 127.0.0.1:{self.nginx.port}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if {(p["metadata"].get("annotations") or {}).get(c.RELEASE) for p in self.pods()} == {"v1"}:
                break
            time.sleep(0.3)

    def release_under_load(self, release: str) -> tuple[int, Load, float, float, set[str], int]:
        assert self.nginx is not None
        uids_before = {p["metadata"]["uid"] for p in self.pods()}
        load = Load("127.0.0.1", self.nginx.port, rate=RATE).start()
        time.sleep(3)
        started = time.monotonic()
        code = self.cfo("release", "web", release, "--wait")
        finished = time.monotonic()
        most_pods = len(self.pods())
        time.sleep(2)
        load.stop()
        uids_after = {p["metadata"]["uid"] for p in self.pods()}
        return code, load, started, finished, uids_before - uids_after, max(0, most_pods - REPLICAS)

    def report(self, title: str, load: Load, started: float, finished: float, replaced: set[str],
               extra: int) -> int:
        before = [s for s in load.samples if s.sent_at < started]
        during = load.between(started, finished)
        failed = load.failures()
        print(f"\n  {title}")
        print(f"  requests sent          {len(load.samples):>8}   (constant {RATE:.0f}/s POST through nginx)")
        print(f"  requests failed        {len(failed):>8}")
        print(f"  p50 before / during    {percentile(before, 50):>7.1f} ms / {percentile(during, 50):.1f} ms")
        print(f"  p99 before / during    {percentile(before, 99):>7.1f} ms / {percentile(during, 99):.1f} ms")
        print(f"  release took           {finished - started:>7.1f} s")
        print(f"  pods replaced          {len(replaced):>8}")
        print(f"  extra pods             {extra:>8}")
        return len(failed)

    def run(self) -> int:
        self.setup()
        step("Release v2 under load: kubectl cfo release web v2 --wait")
        code, load, started, finished, replaced, extra = self.release_under_load("v2")
        failed_v2 = self.report("release v2", load, started, finished, replaced, extra)
        step("Release a broken v3 under load: the canary fails and everything rolls back")
        code3, load3, started3, finished3, replaced3, extra3 = self.release_under_load("v3")
        failed_v3 = self.report("release v3 (cannot boot)", load3, started3, finished3, replaced3, extra3)
        step("kubectl cfo status web / history web")
        self.cfo("status", "web")
        self.cfo("history", "web")
        ok = code == 0 and code3 == 1 and failed_v2 == 0 and failed_v3 == 0 and not replaced and not replaced3
        step(f"Demo {'passed' if ok else 'FAILED'}: v2 exit {code}, v3 exit {code3} (1 = rolled back), "
             f"failed requests {failed_v2} + {failed_v3}, pods replaced {len(replaced) + len(replaced3)}")
        return 0 if ok else 1

    def teardown(self) -> None:
        for part in (self.nginx, self.kubelet, self.controller):
            if part is not None:
                part.stop()
        self.webhook.stop()
        self.cluster.stop()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cfo-demo-") as tmp:
        demo = Demo(Path(tmp))
        try:
            return demo.run()
        finally:
            demo.teardown()


if __name__ == "__main__":
    sys.exit(main())
