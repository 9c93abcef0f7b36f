"""Release v2 under load three ways, side by side, in one run: the question users ask.

    .venv/bin/python -m bench.release_strategies [--pods 4] [--rate 300] [--runs 3]

Same machine, same process, same app (real Puma 5.6, 2 workers per pod), same balancer
(Debian's nginx, reloaded when endpoints change, retrying nothing: `proxy_next_upstream off`
stands in for a balancer such as an ALB that does not retry), same open-loop POST load.

1. native rolling update, defaults: Kubernetes' semantics, simulated. maxSurge 25% and
   maxUnavailable 25% (of --pods). A new pod is Ready as soon as the kubelet reports its
   container started (--kubelet-delay, default 1 s; no readiness probe). An old pod gets
   SIGTERM the moment it is removed from the endpoints; the balancer learns of every endpoint
   change --propagation seconds later (default 2). nginx's passive health check (max_fails 1)
   then stops sending to a refused upstream, which hides part of the damage: an L4 balancer
   without one would fail more.
2. native rolling update with the usual fixes: a readiness probe (the pod is added once Puma
   answers), a preStop sleep of --pre-stop seconds (default 15) before SIGTERM, and a grace
   period longer than preStop plus the longest request.
3. ours, in place: a real control plane, the webhook and the controller as processes, the
   real agent beside each Puma; `kubectl annotate … release=v2` and wait for Complete.

Each strategy runs --runs times; the table shows medians. JSON and a PNG chart go to
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.puma import read_processes
from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.fleet import ControllerProcess, Kubelet, Nginx
from tests.harness.load import Load, Sample
from tests.harness.puma_app import Puma, publish, release_archive
from tests.harness.webhook import WebhookServer, ensure_certs, register

RESULTS = Path(os.environ.get("CFO_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
PUMA_CONFIG = ("queue_requests false",)


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
    mixed_versions_seconds: float


def quantile(samples: list[Sample], q: float) -> float:
    values = sorted(s.latency for s in samples if s.ok)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def puma_processes() -> int:
    return sum(1 for p in read_processes() if p.title.startswith("puma"))


class Sampler:
    """Peak pods and Puma processes while a release runs."""

    def __init__(self, count_pods: Callable[[], int]) -> None:
        self.count_pods, self.peak_pods, self.peak_puma = count_pods, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_pods = max(self.peak_pods, self.count_pods())
            self.peak_puma = max(self.peak_puma, puma_processes())

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def summarize(name: str, load: Load, started: float, finished: float, pods: int, sampler: Sampler,
              base_puma: int) -> Result:
    before = [s for s in load.samples if s.sent_at < started]
    during = load.between(started, finished)
    ordered = sorted((s for s in load.samples if s.ok), key=lambda s: s.sent_at)
    first_v2 = next((s.sent_at for s in ordered if s.body == "v2"), None)
    last_v1 = max((s.sent_at for s in ordered if s.body == "v1"), default=None)
    mixed = max(0.0, last_v1 - first_v2) if first_v2 is not None and last_v1 is not None else 0.0
    return Result(name, len(load.samples), len(load.failures()), quantile(before, .5), quantile(before, .99),
                  quantile(before, 1), quantile(during, .5), quantile(during, .99), quantile(during, 1),
                  finished - started, max(0, sampler.peak_pods - pods), max(0, sampler.peak_puma - base_puma),
                  mixed)


# --- 1 and 2: native rolling updates, simulated faithfully ------------------------------------

@dataclass
class SimPod:
    puma: Puma
    release: str
    ready: bool = False
    gone: bool = False


class NativeRollingUpdate:
    def __init__(self, workdir: Path, pods: int, fixes: bool, propagation: float, pre_stop: float,
                 artifacts: Path, kubelet_delay: float = 1.0) -> None:
        self.workdir, self.n, self.fixes, self.kubelet_delay = workdir, pods, fixes, kubelet_delay
        self.propagation, self.pre_stop, self.artifacts = propagation, pre_stop, artifacts
        self.surge, self.unavailable = math.ceil(pods * 0.25), math.floor(pods * 0.25)
        self.pods: list[SimPod] = []
        self.endpoints: set[int] = set()
        self.lock = threading.Lock()
        self.nginx = Nginx(workdir / "nginx", retry_connect_errors=False)
        self.timers: list[threading.Thread] = []

    def _pod(self, release: str, wait: bool) -> SimPod:
        home = self.workdir / f"pod-{len(self.pods)}"
        (home / "code" / "releases").mkdir(parents=True)
        code = home / "code"
        release_dir = code / "releases" / release
        release_dir.mkdir()
        (release_dir / "config.ru").write_bytes((self.artifacts / f"{release}.ru").read_bytes())
        (code / "current").symlink_to(f"releases/{release}")  # the code is baked into this "image"
        puma = Puma(code, home, port=free_port(), control_port=free_port(), extra_config=PUMA_CONFIG)
        pod = SimPod(puma, release)
        self.pods.append(pod)
        if wait:
            puma.start()
        else:
            thread = threading.Thread(target=self._boot, args=(pod,), daemon=True)
            thread.start()
        return pod

    def _boot(self, pod: SimPod) -> None:
        started = threading.Thread(target=pod.puma.start, daemon=True)
        started.start()
        time.sleep(self.kubelet_delay)  # the kubelet reports the container started
        if self.fixes:  # readiness probe every second until Puma answers
            while not pod.puma.answers():
                time.sleep(1.0)
        pod.ready = True
        self._set_endpoint(pod.puma.port, True)

    def _set_endpoint(self, port: int, present: bool) -> None:
        with self.lock:
            (self.endpoints.add if present else self.endpoints.discard)(port)
        # The balancer learns of the change later (kube-proxy, ingress sync).
        timer = threading.Timer(self.propagation, self._sync_balancer)
        timer.start()
        self.timers.append(timer)  # type: ignore[arg-type]

    def _sync_balancer(self) -> None:
        with self.lock:
            ports = sorted(self.endpoints)
        self.nginx.reload(ports)

    def _terminate(self, pod: SimPod) -> None:
        self._set_endpoint(pod.puma.port, False)
        if self.fixes:
            time.sleep(self.pre_stop)  # preStop sleep, then SIGTERM; Puma finishes in-flight requests
        pod.puma.stop()
        pod.gone = True

    def start(self) -> list[int]:
        for _ in range(self.n):
            pod = self._pod("v1", wait=True)
            pod.ready = True
            self.endpoints.add(pod.puma.port)
        self.nginx.start(sorted(self.endpoints))
        return sorted(self.endpoints)

    def count_pods(self) -> int:
        return sum(1 for p in self.pods if not p.gone)

    def release(self) -> None:
        """The Deployment controller's loop: surge new pods, remove old ones within maxUnavailable."""
        terminations = []
        while True:
            old = [p for p in self.pods if p.release == "v1" and not p.gone and p not in terminations]
            new = [p for p in self.pods if p.release == "v2"]
            ready_new = [p for p in new if p.ready]
            while len(old) + len(new) < self.n + self.surge and len(new) < self.n:
                new.append(self._pod("v2", wait=False))
            available = len(old) + len(ready_new)
            while old and available - 1 >= self.n - self.unavailable:
                victim = old.pop()
                terminations.append(victim)
                thread = threading.Thread(target=self._terminate, args=(victim,), daemon=True)
                thread.start()
                self.timers.append(thread)
                available -= 1
            if not old and len(ready_new) == self.n:
                break
            time.sleep(0.05)
        while not all(p.gone for p in terminations):
            time.sleep(0.05)
        time.sleep(self.propagation)  # until the balancer has the final endpoints

    def stop(self) -> None:
        for pod in self.pods:
            pod.puma.stop()
        self.nginx.stop()


def run_native(fixes: bool, args: argparse.Namespace, artifacts: Path) -> Result:
    with tempfile.TemporaryDirectory(prefix="cfo-bench-native-") as tmp:
        sim = NativeRollingUpdate(Path(tmp), args.pods, fixes, args.propagation, args.pre_stop, artifacts,
                                  args.kubelet_delay)
        try:
            sim.start()
            base = puma_processes()
            load = Load("127.0.0.1", sim.nginx.port, rate=args.rate).start()
            time.sleep(args.baseline)
            with Sampler(sim.count_pods) as sampler:
                started = time.monotonic()
                sim.release()
                finished = time.monotonic()
            time.sleep(1)
            load.stop()
            name = "native + readiness, preStop" if fixes else "native rolling update"
            return summarize(name, load, started, finished, args.pods, sampler, base)
        finally:
            sim.stop()


# --- 3: ours ---------------------------------------------------------------------------------

def run_ours(args: argparse.Namespace, artifacts: Path) -> Result:
    with tempfile.TemporaryDirectory(prefix="cfo-bench-ours-") as tmp:
        work = Path(tmp)
        cluster = ControlPlane(work / "cluster").start()
        webhook = WebhookServer(work / "webhook")
        parts: list = []
        try:
            webhook.start()
            register(cluster, webhook)
            ensure_certs(work / "certs")
            parts.append(ControllerProcess(cluster, work / "controller", work / "certs").start())
            cluster.kubectl("create", "namespace", "bench")
            source = f"file://{artifacts}/{{release}}.tar.gz"
            manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "annotations": {
                "customer-friendly.dev/enabled": "true", "customer-friendly.dev/release": "v1",
                "customer-friendly.dev/source": source, "customer-friendly.dev/canary": "1",
                "customer-friendly.dev/max-unavailable": "50%"}},
                "spec": {"replicas": args.pods, "selector": {"matchLabels": {"app": "web"}}, "template": {
                    "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                        {"name": "puma", "image": "acme/web:ruby", "readinessProbe": {"httpGet": {"port": 3000}}}]}}}}
            cluster.kubectl("-n", "bench", "apply", "-f", "-", input=json.dumps(manifest))
            kubelet = Kubelet(cluster, "bench", work / "pods", work / "certs" / "ca.crt")
            parts.append(kubelet)
            pods = kubelet.sync("app=web", args.pods)
            nginx = Nginx(work / "nginx", retry_connect_errors=False).start([p.puma.port for p in pods])
            parts.append(nginx)

            def rollout() -> dict:
                text = json.loads(cluster.kubectl("-n", "bench", "get", "deploy", "web", "-o", "json").stdout)
                return json.loads(text["metadata"]["annotations"].get("customer-friendly.dev/rollout", "{}"))

            def pod_count() -> int:
                return len(json.loads(cluster.kubectl("-n", "bench", "get", "pods", "-o", "json").stdout)["items"])

            while rollout().get("updated") != args.pods:
                time.sleep(0.2)
            base = puma_processes()
            load = Load("127.0.0.1", nginx.port, rate=args.rate).start()
            time.sleep(args.baseline)
            with Sampler(pod_count) as sampler:
                started = time.monotonic()
                cluster.kubectl("-n", "bench", "annotate", "deploy", "web", "customer-friendly.dev/release=v2",
                                "--overwrite")
                while not (rollout().get("release") == "v2" and rollout().get("phase") == "Complete"):
                    time.sleep(0.1)
                finished = time.monotonic()
            time.sleep(1)
            load.stop()
            return summarize("ours, in place", load, started, finished, args.pods, sampler, base)
        finally:
            for part in reversed(parts):
                part.stop()
            webhook.stop()
            cluster.stop()


# --- report ------------------------------------------------------------------------------------

def median_result(results: list[Result]) -> Result:
    fields = asdict(results[0])
    merged = {k: (results[0].strategy if k == "strategy" else statistics.median(getattr(r, k) for r in results))
              for k in fields}
    return Result(**merged)


def table(rows: list[Result]) -> str:
    head = (f"{'strategy':30} {'sent':>6} {'failed':>6} {'p50 ms':>14} {'p99 ms':>15} {'max ms':>16} "
            f"{'release s':>9} {'+pods':>5} {'+puma':>5} {'mixed s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        def pair(before: float, during: float) -> str:
            return f"{during:7.1f} x{during / before:4.1f}" if before else f"{during:7.1f}"
        lines.append(f"{r.strategy:30} {r.sent:>6.0f} {r.failed:>6.0f} {pair(r.p50_before_ms, r.p50_during_ms):>14} "
                     f"{pair(r.p99_before_ms, r.p99_during_ms):>15} {pair(r.max_before_ms, r.max_during_ms):>16} "
                     f"{r.release_seconds:>9.1f} {r.extra_pods:>5.0f} {r.extra_puma_processes:>5.0f} "
                     f"{r.mixed_versions_seconds:>7.1f}")
    lines.append("latency columns: during the release, and x = during/before; +pods/+puma: peak surge")
    return "\n".join(lines)


def chart(rows: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
    names = [r.strategy.replace(", ", ",\n").replace(" + ", "\n+ ") for r in rows]
    for ax, (title, values) in zip(axes, [
        ("failed requests", [r.failed for r in rows]),
        ("p99 during release (ms)", [r.p99_during_ms for r in rows]),
        ("release wall time (s)", [r.release_seconds for r in rows]),
        ("peak extra pods", [r.extra_pods for r in rows]),
    ], strict=True):
        ax.bar(names, values, color=["#c0504d", "#f79646", "#4f81bd"][: len(rows)])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("Release v2 under a constant POST load (medians)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--rate", type=float, default=300.0, help="POST requests per second")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--propagation", type=float, default=2.0, help="endpoint propagation delay, seconds")
    parser.add_argument("--pre-stop", type=float, default=15.0, help="preStop sleep of the fixed native rollout")
    parser.add_argument("--kubelet-delay", type=float, default=1.0,
                        help="from a new pod's start to the kubelet reporting it (native strategies)")
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds of load before each release")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cfo-bench-art-") as art:
        artifacts = Path(art)
        for release in ("v1", "v2"):
            publish(artifacts, release, release_archive(release))
            (artifacts / f"{release}.ru").write_text(
                f'RELEASE = "{release}"\nrun ->(env) {{ env["rack.input"].read; '
                f'[200, {{"content-type" => "text/plain"}}, ["#{{RELEASE}}\\n"]] }}\n')
        runs: dict[str, list[Result]] = {}
        for i in range(args.runs):
            for name, runner in (("native", lambda: run_native(False, args, artifacts)),
                                 ("fixed", lambda: run_native(True, args, artifacts)),
                                 ("ours", lambda: run_ours(args, artifacts))):
                result = runner()
                runs.setdefault(name, []).append(result)
                print(f"run {i + 1}/{args.runs} {result.strategy}: failed {result.failed} of {result.sent}, "
                      f"release {result.release_seconds:.1f}s", file=sys.stderr, flush=True)
    rows = [median_result(runs[name]) for name in ("native", "fixed", "ours")]
    print(table(rows))
    (RESULTS / "release_strategies.json").write_text(json.dumps(
        {"args": vars(args), "medians": [asdict(r) for r in rows],
         "runs": {k: [asdict(r) for r in v] for k, v in runs.items()}}, indent=2))
    chart(rows, RESULTS / "release_strategies.png")
    print(f"\nwrote {RESULTS / 'release_strategies.json'} and {RESULTS / 'release_strategies.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
