"""Release v2 under load several ways, side by side, in one run, on the real node.

    .venv/bin/python -m bench.release_strategies [--pods 4] [--rate 150] [--runs 3]
        [--boot-cpu 1.5 --request-cpu-ms 4] [--sweep max-unavailable=1,50%,100%] [--control]

Everything is real: the kubelet, containerd, the Deployment controller, EndpointSlices and
kube-proxy (testbed/node.py). Same app (Debian's Puma 5.6, 2 workers per pod, the same
Rack app and config), same constant open-loop POST load through the Service's ClusterIP (a
POST is never retried, so every dropped request shows). Nothing is simulated: what the real
components do is what is measured.

The strategies (STRATEGIES; --strategies picks some by key):
1. `native`: native rolling update, defaults: a real change of the pod template (the release is
   an env var of the container; the code comes from a ConfigMap), maxSurge 25%, maxUnavailable
   25%, no readiness probe, no preStop.
2. `native-fixed`: the same with the usual fixes: a readiness probe (every second) and a preStop
   sleep of --pre-stop seconds (default 15), with a grace period longer than both.
3. `ours-no-surge`, `ours`: ours, in place: the product installed by `cfo-admin install`, an
   opted-in Deployment, `kubectl annotate … release=v2`, until the rollout annotation says
   Complete; without and with the surge worker (the default). Canary 1, max-unavailable 50%.
4. `ours-drain`: ours with `traffic: drain` and a hot restart (SIGUSR2: every worker at once, as an
   app that cannot phase restarts): each pod of a batch leaves the Service's EndpointSlices (its
   readiness gate), settles 2 s, restarts, and comes back. Same pacing.
5. `control` (--control): no release at all, the same load and the same watching for --control-seconds:
   the ratio the measurement itself gives (load generator, the bench's own kubectl polling).

The app: by default the test app, which boots at once and answers at once. --boot-cpu burns that
many CPU seconds when each Puma worker loads the app (as a Rails app's eager loading does; the
busy loop counts the thread's CPU time, so a starved worker burns longer), --request-cpu-ms that
many CPU milliseconds per request. --boot-nice N (a lever, in the app's own Puma config, not the
product) runs a booting worker at niceness N until the app is loaded.

--sweep [BASES:]KEY=V1,V2,... runs variants of the strategies BASES (comma-separated keys; by default
--sweep-on, which defaults to `ours`) in the same run, interleaved with the others: KEY is an
annotation of ours (max-unavailable, canary, worker-surge) or an app lever (workers, boot-nice).
A variant equal to its base is not run twice.

Reported per strategy (medians of --runs): failed requests; p50, p99 and max latency before and
during the release and their ratio; release wall time; peak extra pods; peak extra Puma
processes; the CPU seconds the release cost the cluster (CPU used by every pod and by the
node's components during the release, minus their rate under the same load before it); how busy
the whole machine was before and during the release; the load generator's own lateness (p99).
The bench watches (kubectl every --poll seconds) from the start of the load, so the window before
the release carries the same watching cost as the release. JSON and PNG charts go to bench/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from customer_friendly import contract as c
from customer_friendly.agent.puma import read_processes
from testbed import images
from testbed.load import Load, Sample
from testbed.node import Node, running_node
from testbed.node_app import PUMA_PORT, AppCost, Product, Sources, WebApp, node_release, web_files

RESULTS = Path(os.environ.get("CFO_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


@dataclass(frozen=True)
class Strategy:
    """One way to release v2. `kind` picks the runner (Bench.RUNNERS); the rest are its settings.
    Adding a strategy is one entry in STRATEGIES, e.g. ours with another annotation."""

    key: str
    name: str
    kind: str
    """native, ours or control"""
    fixes: bool = False
    """native only: a readiness probe and a preStop sleep"""
    annotations: dict[str, str] = field(default_factory=dict)
    """ours only: the Deployment's annotations beyond the opt-in"""
    workers: int = 2
    boot_nice: int = 0

    def same_settings(self, other: Strategy) -> bool:
        return replace(self, key="", name="") == replace(other, key="", name="")


OURS_PACING = {c.CANARY: "1", c.MAX_UNAVAILABLE: "50%"}
STRATEGIES = (
    Strategy("native", "native rolling update", "native"),
    Strategy("native-fixed", "native + readiness, preStop", "native", fixes=True),
    Strategy("ours-no-surge", "ours, in place, no surge", "ours", annotations={**OURS_PACING, c.WORKER_SURGE: "false"}),
    Strategy("ours", "ours, in place", "ours", annotations={**OURS_PACING, c.WORKER_SURGE: "true"}),
    Strategy("ours-drain", "ours, drain-first (hot)", "ours",
             annotations={**OURS_PACING, c.TRAFFIC: "drain", c.RESTART: "hot", c.SETTLE_SECONDS: "2"}),
)
"""`ours` is our default: a phased restart with one surge worker per pod (worker-surge)."""
DEFAULT_OURS = next(s for s in STRATEGIES if s.key == "ours")
CONTROL = Strategy("control", "no release (control)", "control", annotations={**OURS_PACING})
DEFAULT_KEYS = ",".join(s.key for s in STRATEGIES)
ANNOTATION_KEYS = {"max-unavailable": c.MAX_UNAVAILABLE, "canary": c.CANARY, "worker-surge": c.WORKER_SURGE}
APP_KEYS = ("workers", "boot-nice")


def sweep_variants(base: Strategy, sweep: str) -> list[Strategy]:
    """`KEY=V1,V2` as variants of `base`, named after what changed."""
    key, _, values = sweep.partition("=")
    if not values or (key not in ANNOTATION_KEYS and key not in APP_KEYS):
        raise SystemExit(f"--sweep {sweep!r}: expected KEY=V1,V2,... with KEY one of "
                         f"{', '.join([*ANNOTATION_KEYS, *APP_KEYS])}")
    variants = []
    for value in values.split(","):
        label = f"{base.name}, {key}={value}"
        if key in ANNOTATION_KEYS:
            variant = replace(base, annotations={**base.annotations, ANNOTATION_KEYS[key]: value})
        else:
            variant = replace(base, workers=int(value)) if key == "workers" else replace(base, boot_nice=int(value))
        variants.append(replace(variant, key=f"{base.key}:{key}={value}", name=label))
    return variants


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
    """How busy the whole machine (all cores) was under the load before the release."""
    during_cpu_percent: float = float("nan")
    """How busy the whole machine was during the release."""
    generator_lag_p99_before_ms: float = float("nan")
    generator_lag_p99_during_ms: float = float("nan")


def quantile(samples: list[Sample], q: float, of: Callable[[Sample], float] = lambda s: s.latency) -> float:
    values = sorted(of(s) for s in samples if s.ok)
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


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, all cores, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields[:8]) - fields[3] - fields[4], sum(fields[:8])


def busy_percent(start: tuple[int, int], end: tuple[int, int]) -> float:
    return 100 * (end[0] - start[0]) / max(1, end[1] - start[1])


def puma_processes() -> int:
    """Puma masters and workers on the node (every pod's processes are visible from the host)."""
    return sum(1 for p in read_processes() if p.title.startswith("puma"))


class Watch:
    """What the bench watches (pod count, Puma processes, whether the release is done), polled by
    one thread every `interval` from the start of the load to the end of the release, so the window
    before the release carries the same cost of watching (kubectl processes) as the release itself.
    Peaks count only once armed, at the release; `finished` is when `done` first said yes after it."""

    def __init__(self, done: Callable[[], bool], interval: float, **probes: Callable[[], int]) -> None:
        self.done, self.interval, self.probes = done, interval, probes
        self.peak = {name: 0 for name in probes}
        self.armed = threading.Event()
        self.finished = threading.Event()
        self.finished_at = 0.0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _look(self) -> None:
        values = {name: probe() for name, probe in self.probes.items()}
        finished = self.done()
        if self.armed.is_set():
            for name, value in values.items():
                self.peak[name] = max(self.peak[name], value)
            if finished and not self.finished.is_set():
                self.finished_at = time.monotonic()
                self.finished.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._look()
            except Exception:  # a kubectl hiccup: look again next time
                self.errors += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def native_objects(namespace: str, pods: int, release: str, strategy: Strategy, cost: AppCost,
                   pre_stop: int) -> list[dict[str, Any]]:
    """A plain Deployment: the code in a ConfigMap, the release an env var of the container."""
    files = web_files("@", workers=strategy.workers, cost=cost)
    code = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "code", "namespace": namespace},
            "data": {"config.ru": files["config.ru"].replace('"@"', 'ENV.fetch("RELEASE")'),
                     "puma.rb": files["config/puma.rb"].replace('directory "/app/current"',
                                                                'directory "/app/code"')}}
    container: dict[str, Any] = {
        "name": "puma", "image": images.APP_IMAGE_ROOT, "imagePullPolicy": "Never",
        "command": ["puma", "-C", "/app/code/puma.rb"], "env": [{"name": "RELEASE", "value": release}],
        "ports": [{"name": "http", "containerPort": PUMA_PORT}],
        "volumeMounts": [{"name": "code", "mountPath": "/app/code"}],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
    }
    if cost.container_security():
        container["securityContext"] = cost.container_security()
    spec: dict[str, Any] = {"containers": [container], "volumes": [{"name": "code", "configMap": {"name": "code"}}]}
    if strategy.fixes:
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
        self.published: set[str] = set()
        self.diagnostics: list[dict[str, Any]] = []
        """Per run: the slowest requests during the release (offset from its start, ms, body = release and
        worker pid, generator lag) and the rollout's progress over time, to see where the tail comes from."""
        self.timeline: list[tuple[float, str]] = []
        self.runners: dict[str, Callable[[Strategy], Result]] = {
            "native": self.native, "ours": self.ours, "control": self.control}

    def run(self, strategy: Strategy) -> Result:
        return self.runners[strategy.kind](strategy)

    def cost(self, strategy: Strategy) -> AppCost:
        return AppCost(self.args.boot_cpu, self.args.request_cpu_ms, strategy.boot_nice)

    def _app(self) -> WebApp:
        self.count += 1
        return WebApp(self.node, self.product, f"bench-{self.count}", replicas=self.args.pods)

    @contextmanager
    def _namespace(self) -> Iterator[WebApp]:
        app = self._app()
        try:
            yield app
        finally:
            self.remove(app)

    def measure(self, name: str, app: WebApp, release: Callable[[], None], done: Callable[[], bool]) -> Result:
        app.wait_serving("v1", timeout=120)
        base_puma = puma_processes()
        load = Load(app.cluster_ip(), 80, rate=self.args.rate).start()
        with Watch(done, self.args.poll, pods=lambda: len(app.pods()), puma=puma_processes) as watch:
            ticks0, cpu0, clock0 = machine_ticks(), cluster_cpu_seconds(self.node), time.monotonic()
            time.sleep(self.args.baseline)
            ticks1, cpu1, started = machine_ticks(), cluster_cpu_seconds(self.node), time.monotonic()
            baseline_rate = (cpu1 - cpu0) / (started - clock0)
            watch.armed.set()
            release()
            if not watch.finished.wait(600):
                raise TimeoutError(f"{name}: the release did not finish in 600 s")
            finished = watch.finished_at
            spent = cluster_cpu_seconds(self.node) - cpu1 - baseline_rate * (time.monotonic() - started)
            ticks2 = machine_ticks()
        time.sleep(1)
        load.stop()
        before = [s for s in load.samples if clock0 <= s.sent_at < started]
        during = load.between(started, finished)
        self._diagnose(name, started, before, during)
        return Result(name, len(load.samples), len(load.failures()), quantile(before, .5), quantile(before, .99),
                      quantile(before, 1), quantile(during, .5), quantile(during, .99), quantile(during, 1),
                      finished - started, max(0, watch.peak["pods"] - self.args.pods),
                      max(0, watch.peak["puma"] - base_puma), spent, busy_percent(ticks0, ticks1),
                      busy_percent(ticks1, ticks2), quantile(before, .99, lambda s: s.lag),
                      quantile(during, .99, lambda s: s.lag))

    def _diagnose(self, name: str, started: float, before: list[Sample], during: list[Sample]) -> None:
        def rows(samples: list[Sample]) -> list[tuple[float, float, str, float]]:
            slow = sorted(samples, key=lambda s: s.latency)[-max(1, len(samples) // 50):]
            return [(round(s.sent_at - started, 3), round(s.latency * 1000, 1), s.body[:60], round(s.lag * 1000, 1))
                    for s in sorted(slow, key=lambda s: s.sent_at)]

        self.diagnostics.append({"strategy": name, "slowest_during": rows(during), "slowest_before": rows(before),
                                 "timeline": [(round(t - started, 2), what) for t, what in self.timeline]})
        self.timeline = []

    def _note(self, what: str) -> None:
        """A change in what the watch sees (rollout batches, replica counts), with its time."""
        if not self.timeline or self.timeline[-1][1] != what:
            self.timeline.append((time.monotonic(), what))

    def native(self, strategy: Strategy) -> Result:
        with self._namespace() as app:
            app.prepare()
            objects = native_objects(app.namespace, self.args.pods, "v1", strategy, self.cost(strategy),
                                     self.args.pre_stop)
            self.node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
            app.wait_ready(timeout=180)

            def release() -> None:
                app.kubectl("set", "env", "deployment/web", "-c", "puma", "RELEASE=v2")

            def done() -> bool:
                status = app.deployment().get("status") or {}
                pods = app.pods()
                self._note(f"pods {len(pods)} updated {status.get('updatedReplicas')} "
                           f"available {status.get('availableReplicas')}")
                return (status.get("updatedReplicas") == status.get("availableReplicas") == self.args.pods
                        and len(pods) == self.args.pods
                        and all(ct.get("value") == "v2" for p in pods for ct in p["spec"]["containers"][0]["env"]))

            return self.measure(strategy.name, app, release, done)

    def _deploy_ours(self, app: WebApp, strategy: Strategy) -> None:
        """The opted-in Deployment on v1, its releases published where only it reads them."""
        cost = self.cost(strategy)
        prefix = f"bench-w{strategy.workers}-b{cost.boot_cpu:g}-r{cost.request_cpu_ms:g}-n{cost.boot_nice}"
        if prefix not in self.published:
            for release in ("v1", "v2"):
                self.product.sources.publish_at(prefix, release, node_release(release, workers=strategy.workers,
                                                                              cost=cost))
            self.published.add(prefix)
        app.create(app.manifest("v1", self.product.sources.s3_at(prefix), annotations=dict(strategy.annotations),
                                container_security=cost.container_security()))
        app.wait_ready(serving="v1")
        app.wait_rollout("v1", ("Complete",))

    def ours(self, strategy: Strategy) -> Result:
        with self._namespace() as app:
            self._deploy_ours(app, strategy)

            def release() -> None:
                app.kubectl("annotate", "deployment", "web", f"{c.RELEASE}=v2", "--overwrite")

            def done() -> bool:
                rollout = app.rollout()
                self._note(f"{rollout.get('release')} {rollout.get('phase')} updated {rollout.get('updated')} "
                           f"batch {rollout.get('batch')}")
                return rollout.get("release") == "v2" and rollout.get("phase") == "Complete" and not rollout.get(
                    "batch")

            return self.measure(strategy.name, app, release, done)

    def control(self, strategy: Strategy) -> Result:
        """Ours deployed, the same load and watching (the rollout annotation read as for ours), no release."""
        with self._namespace() as app:
            self._deploy_ours(app, strategy)
            armed: list[float] = []

            def release() -> None:
                armed.append(time.monotonic())

            def done() -> bool:
                app.rollout()
                return bool(armed) and time.monotonic() - armed[0] >= self.args.control_seconds

            return self.measure(strategy.name, app, release, done)

    def remove(self, app: WebApp) -> None:
        """The next strategy starts on an idle node: wait until this one's pods are gone."""
        self.node.kubectl("delete", "namespace", app.namespace, "--wait=false", check=False)
        self.node.wait("the strategy's pods to go", lambda: not app.pods(), 180)


# --- report ------------------------------------------------------------------------------------

def median_result(results: list[Result]) -> Result:
    merged: dict[str, Any] = {f.name: statistics.median(getattr(r, f.name) for r in results)
                              for f in dataclasses.fields(Result) if f.name != "strategy"}
    merged["strategy"] = results[0].strategy
    return Result(**merged)


def _ratio(before: float, during: float, width: int = 6) -> str:
    return f"{during:{width}.1f} x{during / before:4.1f}" if before else f"{during:{width}.1f}"


def table(rows: list[Result]) -> str:
    width = max(28, *(len(r.strategy) for r in rows))
    head = (f"{'strategy':{width}} {'sent':>6} {'failed':>6} {'p50 ms':>13} {'p99 ms':>14} {'max ms':>15} "
            f"{'release s':>9} {'+pods':>5} {'+puma':>5} {'CPU s':>6} {'busy %':>9} {'gen lag':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.strategy:{width}} {r.sent:>6.0f} {r.failed:>6.0f} "
                     f"{_ratio(r.p50_before_ms, r.p50_during_ms):>13} {_ratio(r.p99_before_ms, r.p99_during_ms):>14} "
                     f"{_ratio(r.max_before_ms, r.max_during_ms):>15} "
                     f"{r.release_seconds:>9.1f} {r.extra_pods:>5.0f} {r.extra_puma_processes:>5.0f} "
                     f"{r.release_cpu_seconds:>6.1f} {r.baseline_cpu_percent:>4.0f}/{r.during_cpu_percent:<4.0f} "
                     f"{r.generator_lag_p99_before_ms:>5.1f}/{r.generator_lag_p99_during_ms:<5.1f}")
    lines.append("latency: during the release, x = during/before; +pods/+puma: peak surge; CPU s: the cluster's "
                 "CPU the release added;\nbusy %: whole machine (2 cores = 100%) before/during; gen lag: p99 of how "
                 "late the load generator sent, before/during (ms)")
    by_name = {r.strategy: r for r in rows}
    native, ours = by_name.get(STRATEGIES[0].name), by_name.get(DEFAULT_OURS.name)
    if native and ours and native.release_seconds and ours.release_seconds:
        lines.append(f"ours vs native defaults: release time x{ours.release_seconds / native.release_seconds:.2f}, "
                     f"p99 during x{ours.p99_during_ms / native.p99_during_ms:.2f}, "
                     f"failed {ours.failed:.0f} vs {native.failed:.0f}")
    return "\n".join(lines)


def chart(rows: list[Result], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(4 * 5 + max(0, len(rows) - 4) * 2, 4.2))
    names = [r.strategy.replace(", ", ",\n").replace(" + ", "\n+ ") for r in rows]
    colors = ["#c0504d", "#f79646", "#9bbb59", "#4f81bd", "#8064a2", "#4bacc6", "#7f7f7f", "#2c4d75"]
    for ax, (label, values) in zip(axes, [
        ("failed requests", [r.failed for r in rows]),
        ("p99 during / p99 before", [r.p99_during_ms / r.p99_before_ms if r.p99_before_ms else 0 for r in rows]),
        ("release wall time (s)", [r.release_seconds for r in rows]),
        ("peak extra pods", [r.extra_pods for r in rows]),
        ("CPU seconds of the release", [r.release_cpu_seconds for r in rows]),
    ], strict=True):
        ax.bar(names, values, color=[colors[i % len(colors)] for i in range(len(rows))])
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelsize=7, rotation=90)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- the run -----------------------------------------------------------------------------------

def plan(args: argparse.Namespace) -> tuple[list[Strategy], dict[str, list[str]]]:
    """Every strategy to run (each once per run), and for each sweep the names of its rows."""
    known = {s.key: s for s in (*STRATEGIES, CONTROL)}
    chosen = [known[k] for k in args.strategies.split(",") if k]
    if args.control and CONTROL not in chosen:
        chosen.append(CONTROL)
    sweeps: dict[str, list[str]] = {}
    for sweep in args.sweep:
        bases, _, setting = sweep.rpartition(":")  # `ours-no-surge:boot-nice=19` names its own bases
        for base_key in (bases or args.sweep_on).split(","):
            base = known[base_key]
            names = []
            for variant in sweep_variants(base, setting):
                same = next((s for s in chosen if s.same_settings(variant)), None)
                if same is None:
                    chosen.append(variant)
                names.append((same or variant).name)
            sweeps[f"{base.name}: {setting}"] = names
    return chosen, sweeps


def run_all(bench: Bench, chosen: list[Strategy], runs: int, save: Callable[[dict[str, list[Result]]], None]
            ) -> dict[str, list[Result]]:
    results: dict[str, list[Result]] = {}
    for i in range(runs):
        for strategy in chosen:
            try:
                result = bench.run(strategy)
            except Exception:  # one broken run must not lose the others: it is reported, and missing
                print(f"run {i + 1}/{runs} {strategy.name} FAILED:\n{traceback.format_exc()}", file=sys.stderr,
                      flush=True)
                continue
            results.setdefault(result.strategy, []).append(result)
            save(results)
            print(f"run {i + 1}/{runs} {result.strategy}: failed {result.failed} of {result.sent}, "
                  f"release {result.release_seconds:.1f}s, p99 {result.p99_before_ms:.1f} -> "
                  f"{result.p99_during_ms:.1f} ms, busy {result.baseline_cpu_percent:.0f}% -> "
                  f"{result.during_cpu_percent:.0f}%", file=sys.stderr, flush=True)
    return results


def report(args: argparse.Namespace, chosen: list[Strategy], sweeps: dict[str, list[str]],
           results: dict[str, list[Result]]) -> dict[str, Any]:
    medians = {name: median_result(rs) for name, rs in results.items()}
    rows = [medians[s.name] for s in chosen if s.name in medians]
    print(table(rows))
    title = (f"Release v2 under {args.rate:g} POST/s through a ClusterIP, real node, {args.pods} pods, app boot "
             f"{args.boot_cpu:g} s CPU/worker, {args.request_cpu_ms:g} ms CPU/request (medians of {args.runs})")
    chart(rows, RESULTS / f"{args.out}.png", title)
    for i, (sweep, names) in enumerate(sweeps.items()):
        sweep_rows = [replace(medians[n], strategy=n) for n in names if n in medians]
        print(f"\nsweep {sweep}\n{table(sweep_rows)}")
        chart(sweep_rows, RESULTS / f"{args.out}-sweep{i + 1}.png", f"sweep {sweep}: {title}")
    return {"medians": [asdict(r) for r in rows],
            "sweeps": {sweep: [asdict(medians[n]) for n in names if n in medians] for sweep, names in sweeps.items()}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=4)
    parser.add_argument("--rate", type=float, default=150.0, help="POST requests per second")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pre-stop", type=int, default=15, help="preStop sleep of the fixed native rollout")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of load before each release")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between the bench's looks at the cluster")
    parser.add_argument("--boot-cpu", type=float, default=0.0,
                        help="CPU seconds each Puma worker burns loading the app")
    parser.add_argument("--request-cpu-ms", type=float, default=0.0, help="CPU milliseconds per request")
    parser.add_argument("--strategies", default=DEFAULT_KEYS, help=f"keys, comma-separated (default {DEFAULT_KEYS})")
    parser.add_argument("--control", action="store_true", help="also a window of load with no release")
    parser.add_argument("--control-seconds", type=float, default=15.0)
    parser.add_argument("--sweep", action="append", default=[], help="[BASES:]KEY=V1,V2,... (repeatable)")
    parser.add_argument("--sweep-on", default="ours", help="strategy keys the sweeps vary, comma-separated")
    parser.add_argument("--out", default="release_strategies", help="name of the JSON and PNG files")
    parser.add_argument("--report", metavar="JSON", help="no run: the tables and charts again from this JSON")
    return parser.parse_args()


def report_again(path: Path) -> int:
    """The tables and charts again from a JSON this bench wrote (also a partial one, saved after
    each run): medians of the runs it holds."""
    saved = json.loads(path.read_text())
    args = argparse.Namespace(**saved["args"])
    chosen, sweeps = plan(args)
    results = {name: [Result(**r) for r in rs] for name, rs in saved["runs"].items()}
    saved.update(report(args, chosen, sweeps, results))
    path.write_text(json.dumps(saved, indent=2))
    return 0


def main() -> int:
    args = parse_args()
    if args.report:
        return report_again(Path(args.report))
    chosen, sweeps = plan(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.out}.json"
    meta = {"args": vars(args), "node": "real kubelet, containerd, kube-proxy (testbed/node.py)",
            "strategies": [asdict(s) for s in chosen]}

    def save(results: dict[str, list[Result]], extra: dict[str, Any] | None = None) -> None:
        out.write_text(json.dumps({**meta, **(extra or {}),
                                   "runs": {k: [asdict(r) for r in v] for k, v in results.items()}}, indent=2))

    with tempfile.TemporaryDirectory(prefix="cfo-bench-") as tmp, running_node(Path(tmp) / "node") as node:
        sources = Sources(Path(tmp) / "sources").start()
        for proc in sources.processes():
            node.adopt(proc)
        try:
            bench = Bench(node, Product(node, sources, Path(tmp) / "product").install(), args)
            results = run_all(bench, chosen, args.runs,
                              lambda r: save(r, {"diagnostics": bench.diagnostics}))
            meta["diagnostics"] = bench.diagnostics
        finally:
            sources.stop()
    save(results, report(args, chosen, sweeps, results))
    print(f"\nwrote {out} and its PNG charts in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
