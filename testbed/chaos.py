"""The chaos suite on the real node: releases of an opted-in Puma Deployment under a constant POST
load through its ClusterIP, each trial with one fault at a seeded moment, and the invariants of
`chaos_checks` judged after every trial.

One Deployment (3 pods, canary 1, then one pod at a time) serves every trial; each trial asks for
a release of its own (`c<seed>`), so the agents' per-release counts say what that trial did. A
trial's seed alone decides its fault (unless one is forced), the moment (a batch number and a
delay into it), the pod hit and the fault's length, so `make chaos SEED=<seed> TRIALS=1` replays
it (on a fresh node, whose pods start on another release: the moment is the same, not every byte).

`python -m testbed.chaos --trials N --seed S [--fault F] [--out FILE]` starts its own node;
tests/node/test_chaos.py runs the short profile on the test session's node.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from customer_friendly import contract as c
from customer_friendly.contract.rollout import COMPLETE, Rollout
from testbed.chaos_checks import (
    AGENT,
    FAULTS,
    PUMA,
    ControllerLimits,
    ControllerSample,
    PodSeen,
    PumaKill,
    TrialSeen,
    controller_sample,
    controller_summary,
    controller_violations,
    fault_of,
    format_table,
    killed_master_failures,
    replay_command,
    table,
    trial_violations,
)
from testbed.controlplane import ControlPlaneError
from testbed.load import Load
from testbed.node import running_node
from testbed.node_app import (
    INSTALL_NAMESPACE,
    PUMA_PORT,
    Peaks,
    Product,
    Sources,
    WebApp,
    kill_container,
    node_release,
)

logger = logging.getLogger(__name__)

RATE = 50.0
"""POST/s through the ClusterIP, for the whole run."""
BOUND_SECONDS = 240.0
"""A rollout must end within this of the last release asked for (a SIGKILLed leader's Lease
alone takes 15 s to expire; a batch deadline is 300 s, which no trial here should reach)."""
BATCHES = 3
"""3 pods, canary 1, then one at a time."""
RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "chaos.json"


@dataclass
class Trial:
    """One trial while it runs: what was asked, and what the fault did."""

    run: ChaosRun
    seed: int
    fault: str
    rng: random.Random
    releases: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    variant: str = ""
    puma_kill: PumaKill | None = None
    asked_at: float = 0.0
    watch: EndpointWatch | None = None

    @property
    def app(self) -> WebApp:
        return self.run.app

    def new_release(self, suffix: str = "") -> str:
        release = f"c{self.seed}{suffix}"
        self.run.publish(release)
        return release

    def ask(self, release: str) -> None:
        self.app.kubectl("annotate", "deployment", self.app.name, f"{c.RELEASE}={release}", "--overwrite")
        self.asked(release)

    def asked(self, release: str) -> None:
        self.releases.append(release)
        self.asked_at = time.monotonic()

    def moment(self, first_batch: int = 0) -> str:
        """Wait for a seeded moment of the rollout in flight: batch 0 (just asked) to BATCHES,
        then a seeded delay. A rollout that ends before that batch ends the wait too."""
        batch, delay = self.rng.randint(first_batch, BATCHES), round(self.rng.uniform(0, 2.5), 2)
        release = self.releases[-1]
        if batch:
            def reached() -> bool:
                record = Rollout.from_wire(self.app.rollout())
                return record is not None and record.release == release and (
                    record.batch_number >= batch or record.settled)

            self.app.node.wait(f"batch {batch} of {release}", reached, 120, interval=0.1)
        time.sleep(delay)
        return f"batch {batch} + {delay}s"

    def pick_pod(self) -> str:
        """A pod of the batch in flight (7 times in 10, when there is one), else any pod."""
        in_batch = self.rng.random() < 0.7
        batch = sorted(self.app.rollout().get("batch") or [])
        names = batch if in_batch and batch else sorted(p["metadata"]["name"] for p in self.app.pods())
        return self.rng.choice(names)


class EndpointWatch(threading.Thread):
    """Polls the Service's EndpointSlices until `ip` is no longer a ready endpoint, and records
    when that was first seen (the end of the poll that saw it: an upper bound)."""

    def __init__(self, app: WebApp, ip: str, limit: float = 60) -> None:
        super().__init__(daemon=True)
        self.app, self.ip, self.limit = app, ip, limit
        self.left_at: float | None = None

    def ready(self) -> bool:
        slices = json.loads(self.app.kubectl("get", "endpointslices", "-l",
                                             f"kubernetes.io/service-name={self.app.name}", "-o", "json").stdout)
        return any(self.ip in endpoint.get("addresses", []) and (endpoint.get("conditions") or {}).get("ready")
                   for item in slices["items"] for endpoint in item.get("endpoints") or [])

    def run(self) -> None:
        until = time.monotonic() + self.limit
        while time.monotonic() < until:
            try:
                ready = self.ready()
            except (ControlPlaneError, ValueError):
                continue
            if not ready:
                self.left_at = time.monotonic()
                return
            time.sleep(0.05)


class Changes(threading.Thread):
    """What one thing looked like over the whole run, one line per change, so that a trial whose
    requests failed can show what the Service's endpoints, the pods' readiness and kube-proxy's
    rules were meanwhile."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.lines: list[tuple[float, str, str, str]] = []
        """(monotonic time, wall clock, the object's name, the line) per change."""
        self.errors: list[str] = []
        """Why a watch ended (an API server restart ends it too): an empty timeline then says why."""
        self._stop = threading.Event()

    def seen(self, name: str, line: str) -> None:
        self.lines.append((time.monotonic(), time.strftime("%H:%M:%S"), name, line))

    def stop(self) -> None:
        self._stop.set()

    def around(self, start: float, end: float, margin: float = 5.0) -> list[str]:
        """Each object's state as `margin` before `start` began (its last line before), then its
        changes until `margin` after `end`, each with its time relative to `start`."""
        before: dict[str, tuple[float, str, str]] = {}
        during: list[tuple[float, str, str]] = []
        last: dict[str, str] = {}
        for at, wall, name, line in list(self.lines):
            if at < start - margin:
                before[name] = (at, wall, line)
            elif at <= end + margin and last.get(name, before.get(name, (0, "", ""))[2]) != line:
                during.append((at, wall, line))
            last[name] = line
        return [f"{at - start:+7.2f}s {wall} {line}" for at, wall, line in sorted(before.values()) + during]


class Timeline(Changes):
    """`kubectl get -w -o json` of one kind of the app's objects (restarted when the API server
    goes away)."""

    def __init__(self, app: WebApp, kind: str, selector: str, describe: Callable[[dict[str, Any]], str]) -> None:
        super().__init__()
        self.app, self.describe = app, describe
        self.args = ["get", kind, "-n", app.namespace, "-l", selector, "-w", "-o", "json"]
        self._proc: subprocess.Popen[str] | None = None

    def run(self) -> None:
        control = self.app.node.control
        decoder = json.JSONDecoder()
        while not self._stop.is_set():
            proc = self._proc = subprocess.Popen([str(control.kubectl_path), *self.args], stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                                 env=control.env())
            assert proc.stdout is not None and proc.stderr is not None
            buffer = ""
            for chunk in proc.stdout:
                buffer += chunk
                while buffer.strip():
                    try:
                        item, used = decoder.raw_decode(buffer.lstrip())
                    except ValueError:
                        break  # an object not yet whole
                    buffer = buffer.lstrip()[used:]
                    for obj in item.get("items", [item]) if item.get("kind", "").endswith("List") else [item]:
                        self.seen(obj["metadata"]["name"], self.describe(obj))
            proc.wait()
            error = proc.stderr.read().strip()
            if error:
                self.errors.append(error[-300:])
            self._stop.wait(0.5)

    def stop(self) -> None:
        super().stop()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(5)


class ProxyRules(Changes):
    """kube-proxy's iptables rules for the Service, polled: the endpoints its chain sends new
    connections to, or `reject` (the rule kube-proxy installs for a Service with no ready
    endpoint, which answers a connection with "refused")."""

    def __init__(self, service: str, interval: float = 0.5) -> None:
        super().__init__()
        self.service, self.interval = service, interval

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                nat = subprocess.run(["iptables", "-w", "5", "-t", "nat", "-S"], capture_output=True, text=True,
                                     timeout=10, check=False).stdout
                reject = subprocess.run(["iptables", "-w", "5", "-t", "filter", "-S"], capture_output=True,
                                        text=True, timeout=10, check=False).stdout
            except subprocess.TimeoutExpired:
                self.seen("proxy", "proxy: iptables did not answer in 10 s")
                continue
            self.seen("proxy", proxy_rules(self.service, nat, reject))
            self._stop.wait(self.interval)


def proxy_rules(service: str, nat: str, filter_rules: str) -> str:
    """`proxy <ns/name>: <endpoint> ...` from `iptables -S` of the nat and filter tables (kube-proxy
    names each rule in a comment, `"<ns/name>[:<port>] -> <ip:port>"`), with `reject` when the
    filter table refuses the Service's connections (`"<ns/name>[:<port>] has no endpoints"`)."""
    name = re.escape(service) + r"(?::[\w.-]+)?"
    endpoints = sorted({m.group(1) for line in nat.splitlines() if line.startswith("-A KUBE-SVC-")
                        for m in [re.search(f'"{name} -> ([^"]+)"', line)] if m})
    rejects = any(re.search(f'"{name} has no endpoints"', line) and "REJECT" in line
                  for line in filter_rules.splitlines())
    return f"proxy {service}: " + " ".join(endpoints or ["no endpoints"]) + (" reject" if rejects else "")


def describe_slice(endpoint_slice: dict[str, Any]) -> str:
    """`slice <name> <pod>=ready|not-ready[,terminating] ...`."""
    def state(endpoint: dict[str, Any]) -> str:
        conditions = endpoint.get("conditions") or {}
        return ("ready" if conditions.get("ready", True) else "not-ready") + (
            ",terminating" if conditions.get("terminating") else "")
    return " ".join([f"slice {endpoint_slice['metadata']['name']}", *(
        f"{(e.get('targetRef') or {}).get('name', e.get('addresses'))}={state(e)}"
        for e in endpoint_slice.get("endpoints") or [])])


def describe_pod(pod: dict[str, Any]) -> str:
    """`pod <name> <condition>=<status> ... <container>:ready=<b>,restarts=<n> ...`."""
    status = pod.get("status") or {}
    return " ".join([
        f"pod {pod['metadata']['name']}" + (" deleting" if pod["metadata"].get("deletionTimestamp") else ""),
        *(f"{cond['type']}={cond['status']}" for cond in status.get("conditions") or []
          if cond["type"] not in ("PodScheduled", "Initialized", "PodReadyToStartContainers")),
        *(f"{s['name']}:ready={s.get('ready')},restarts={s.get('restartCount', 0)}"
          for s in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []))])


def service_timelines(app: WebApp) -> list[Changes]:
    """The Service's EndpointSlices (ready per pod), the pods' conditions and container states, and
    kube-proxy's rules for it."""
    return [Timeline(app, "endpointslices", f"kubernetes.io/service-name={app.name}", describe_slice),
            Timeline(app, "pods", f"app={app.name}", describe_pod), ProxyRules(f"{app.namespace}/{app.name}")]


def log_lines(path: Path, start_wall: float, end_wall: float, needles: tuple[str, ...]) -> list[str]:
    """Lines of a klog log (`I1202 14:45:38.123456 ...`) between two wall-clock times holding a needle."""
    if not path.is_file():
        return []
    day = time.strftime("%m%d", time.localtime(start_wall))  # klog writes local time
    lo, hi = (time.strftime("%H:%M:%S", time.localtime(t)) for t in (start_wall, end_wall))
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stamp = line[1:5], line[6:14]
        if stamp[0] == day and lo <= stamp[1] <= hi and any(n in line for n in needles):
            out.append(line[:300])
    return out


# --- the faults, in the order of the issue -----------------------------------------------------

def controller_fault(trial: Trial) -> None:
    """The leading controller's process SIGKILLed (no SIGTERM, the Lease kept until it expires),
    or its pod deleted (SIGTERM, the Lease given up, a new pod made by its Deployment)."""
    trial.ask(trial.new_release())
    when = trial.moment()
    leader = trial.run.product.leader()
    if not leader:
        trial.errors.append("no controller held the Lease")
        return
    if trial.rng.random() < 0.5:
        kill_container(trial.app.node, INSTALL_NAMESPACE, leader, "controller")
        trial.variant = f"leader {leader} SIGKILLed at {when}"
    else:
        trial.app.node.kubectl("-n", INSTALL_NAMESPACE, "delete", "pod", leader, "--wait=false")
        trial.variant = f"leader pod {leader} deleted at {when}"


def agent_fault(trial: Trial) -> None:
    """The agent sidecar of one pod SIGKILLed; the kubelet restarts it (the pod stays)."""
    trial.ask(trial.new_release())
    when = trial.moment()
    pod = trial.pick_pod()
    kill_container(trial.app.node, trial.app.namespace, pod, AGENT)
    trial.restarted.append(f"{pod}/{AGENT}")
    trial.variant = f"agent of {pod} SIGKILLed at {when}"


def puma_fault(trial: Trial) -> None:
    """The Puma master of one pod SIGKILLed; the kubelet restarts the container. The Service's
    EndpointSlices are watched from before the kill until the pod's endpoint is not ready."""
    trial.ask(trial.new_release())
    when = trial.moment()
    pod = trial.pick_pod()
    ip = next(p["status"]["podIP"] for p in trial.app.pods() if p["metadata"]["name"] == pod)
    trial.watch = EndpointWatch(trial.app, ip)
    if not trial.watch.ready():
        trial.errors.append(f"{pod} was not a ready endpoint before its Puma master was killed")
    trial.watch.start()
    killed_at = time.monotonic()
    kill_container(trial.app.node, trial.app.namespace, pod, PUMA)
    trial.puma_kill = PumaKill(pod, killed_at, None)
    trial.restarted.append(f"{pod}/{PUMA}")
    trial.variant = f"Puma master of {pod} SIGKILLed at {when}"


def supersede_fault(trial: Trial) -> None:
    """A second release asked for while the first is in flight."""
    trial.ask(trial.new_release())
    when = trial.moment()
    trial.ask(trial.new_release("b"))
    trial.variant = f"{trial.releases[-1]} asked at {when} of {trial.releases[0]}"


def rollback_fault(trial: Trial) -> None:
    """The release served before asked for again mid-batch (the README's way to roll back)."""
    previous = trial.run.current
    trial.ask(trial.new_release())
    when = trial.moment(first_batch=1)
    trial.ask(previous)
    trial.variant = f"rollback to {previous} asked at {when}"


def source_fault(trial: Trial) -> None:
    """The S3 server stopped when a batch starts fetching, and started again (same address, same
    objects) a few seconds later."""
    objects = trial.run.sources.s3_objects()
    down = round(trial.rng.uniform(2, 6), 1)
    trial.ask(trial.new_release())
    when = trial.moment()
    trial.run.sources.stop_s3()
    time.sleep(down)
    trial.app.node.adopt(trial.run.sources.start_s3(objects))
    trial.variant = f"S3 down {down}s from {when}"


def apiserver_fault(trial: Trial) -> None:
    """kube-apiserver stopped for a few seconds and started again."""
    down = round(trial.rng.uniform(2, 6), 1)
    trial.ask(trial.new_release())
    when = trial.moment()
    trial.app.node.restart_apiserver(down)
    trial.variant = f"kube-apiserver down {down}s from {when}"


def webhook_fault(trial: Trial) -> None:
    """The release applied as a GitOps tool does (`kubectl apply` of the whole Deployment, and of
    a second opted-in Deployment) while one webhook pod is deleted. Both must be admitted with
    the injection: web's template unchanged (no native rollout), the probe's injected."""
    release = trial.new_release()
    webhooks = sorted(p["metadata"]["name"] for p in trial.run.product.pods("webhook"))
    victim = trial.rng.choice(webhooks)
    delete_after, apply_after = round(trial.rng.uniform(0, 1.5), 2), round(trial.rng.uniform(0, 1.5), 2)
    app = trial.app
    web = app.manifest(release, trial.run.sources.s3())
    probe = app.manifest(release, trial.run.sources.s3())
    probe["metadata"]["name"] = "probe"
    probe["spec"].update(replicas=0, selector={"matchLabels": {"app": "probe"}})
    probe["spec"]["template"]["metadata"]["labels"] = {"app": "probe"}

    def delete() -> None:
        time.sleep(delete_after)
        app.node.kubectl("-n", INSTALL_NAMESPACE, "delete", "pod", victim, "--wait=false")

    deleter = threading.Thread(target=delete, daemon=True)
    deleter.start()
    time.sleep(apply_after)
    applied = app.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([web, probe]), check=False)
    trial.asked(release)
    deleter.join()
    trial.variant = f"webhook pod {victim} deleted {delete_after}s, Deployments applied {apply_after}s in"
    if applied.returncode != 0:
        trial.errors.append(f"kubectl apply failed while a webhook pod was deleted: {applied.stderr.strip()}")
        trial.releases.pop()
        return
    template = json.loads(app.kubectl("get", "deployment", "probe", "-o", "json").stdout)["spec"]["template"]
    if AGENT not in [ct["name"] for ct in template["spec"].get("initContainers") or []]:
        trial.errors.append("the probe Deployment was admitted without the agent injected")


ACTIONS: dict[str, Callable[[Trial], None]] = {
    "controller": controller_fault, "agent": agent_fault, "puma": puma_fault, "supersede": supersede_fault,
    "rollback": rollback_fault, "source": source_fault, "apiserver": apiserver_fault, "webhook": webhook_fault,
}
assert tuple(ACTIONS) == FAULTS


# --- the run -----------------------------------------------------------------------------------

@dataclass
class ChaosRun:
    """The app, the load and everything seen so far; `trial()` runs one more."""

    app: WebApp
    current: str = "c-base"
    limits: ControllerLimits = field(default_factory=ControllerLimits)
    rate: float = RATE
    log: Callable[[str], None] = print
    load: Load | None = None
    results: list[tuple[TrialSeen, list[str]]] = field(default_factory=list)
    controller: list[ControllerSample] = field(default_factory=list)
    started: float = 0.0
    _volumes: dict[str, Path] = field(default_factory=dict)
    _last: dict[str, PodSeen] = field(default_factory=dict)
    _mark: float = 0.0
    timelines: list[Changes] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    """For each trial that broke an invariant with failed requests: what was seen meanwhile."""

    @property
    def product(self) -> Product:
        return self.app.product

    @property
    def sources(self) -> Sources:
        return self.app.product.sources

    def publish(self, release: str) -> None:
        self.sources.publish_at("web", release, node_release(release))

    def start(self) -> ChaosRun:
        self.publish(self.current)
        self.app.deploy(self.current)
        self.started = time.monotonic()
        self.timelines = service_timelines(self.app)
        for timeline in self.timelines:
            timeline.start()
        self.load = Load(self.app.cluster_ip(), 80, rate=self.rate).start()
        time.sleep(1)
        self._last, self._mark = self.observe(), time.monotonic()
        self.sample_controller()
        return self

    def stop(self) -> None:
        if self.load:
            self.load.stop()
        for timeline in self.timelines:
            timeline.stop()

    # --- one trial --------------------------------------------------------------------------

    def trial(self, seed: int, fault: str | None = None) -> tuple[TrialSeen, list[str]]:
        assert self.load is not None, "start() first"
        fault = fault or fault_of(seed)
        trial = Trial(self, seed, fault, random.Random(seed))
        before, replicasets, started = self._last, tuple(self.app.replicasets()), self._mark
        with Peaks(pods=self._pod_count) as peaks:
            try:
                ACTIONS[fault](trial)
            except (ControlPlaneError, OSError, ValueError, StopIteration) as err:
                trial.errors.append(f"the fault could not be carried out: {err}")
            settle, record = self.settle(trial)
            self.recover(trial)
        after = self.observe()
        self.sample_controller()
        ended = time.monotonic()
        samples = [s for s in list(self.load.samples) if started <= s.sent_at < ended]
        if trial.puma_kill is not None and trial.watch is not None:
            trial.watch.join()
            trial.puma_kill = PumaKill(trial.puma_kill.pod, trial.puma_kill.killed_at, trial.watch.left_at)
        seen = TrialSeen(
            seed=seed, fault=fault, variant=trial.variant, releases=tuple(trial.releases), started_at=started,
            ended_at=ended, before=before, after=after, replicasets_before=replicasets,
            replicasets_after=tuple(self.app.replicasets()), replicas=self.app.replicas,
            peak_pods=peaks.peak["pods"], rollout=record, settle_seconds=settle, bound_seconds=BOUND_SECONDS,
            requests=len(samples), failures=tuple(s.sent_at for s in samples if not s.ok),
            restarted=tuple(trial.restarted), puma_kill=trial.puma_kill, errors=tuple(trial.errors),
            failure_kinds=dict(Counter(s.body.split(":")[0] for s in samples if not s.ok)))
        violations = trial_violations(seen)
        if violations:
            self.log(f"seed {seed}: the controllers' last lines\n{self.app.controller_log()}")
            if seen.failures:
                self.diagnoses.append(self.while_failing(seen))
                self.log(self.diagnoses[-1])
        self.results.append((seen, violations))
        self._last, self._mark = after, ended
        final = Rollout.from_wire(record)
        if final is not None and final.settled:
            # What the pods serve now: a rollout that did not complete went back (or stayed) on previous.
            self.current = final.previous if final.phase != COMPLETE and final.previous else final.release
        self.log(self.describe(seen, violations))
        return seen, violations

    def _pod_count(self) -> int:
        try:
            return len(self.app.pods())
        except (ControlPlaneError, ValueError):
            return 0  # the API server may be down in this very trial

    def settle(self, trial: Trial) -> tuple[float | None, dict[str, Any]]:
        """Until the rollout of the last release asked for has ended (or the bound has passed)."""
        if not trial.releases:
            return 0.0, self.app.rollout()
        wanted, last = trial.releases[-1], {}

        def ended() -> bool:
            nonlocal last
            last = self.app.rollout()
            record = Rollout.from_wire(last)
            return record is not None and record.release == wanted and record.settled

        try:
            remaining = BOUND_SECONDS - (time.monotonic() - trial.asked_at)
            self.app.node.wait(f"the rollout of {wanted} to end", ended, max(remaining, 1), interval=0.25)
        except ControlPlaneError:
            return None, last
        return round(time.monotonic() - trial.asked_at, 1), last

    def recover(self, trial: Trial) -> None:
        """Back to a steady state before judging: every pod ready, our components available."""
        try:
            self.app.wait_ready(timeout=300)
            self.product.wait_available(timeout=300)
        except ControlPlaneError as err:
            trial.errors.append(f"the node did not get back to a steady state: {str(err)[:400]}")

    # --- what is seen -----------------------------------------------------------------------

    def observe(self) -> dict[str, PodSeen]:
        return {pod["metadata"]["name"]: self.observe_pod(pod) for pod in self.app.pods()}

    def observe_pod(self, pod: dict[str, Any]) -> PodSeen:
        name, uid, status = pod["metadata"]["name"], pod["metadata"]["uid"], pod.get("status") or {}
        if uid not in self._volumes:
            self._volumes[uid] = self.app.volume(pod)
        volume = self._volumes[uid]
        current = os.readlink(volume / "current") if os.path.lexists(volume / "current") else None
        agent = self._agent_status(pod)
        restarts = {s["name"]: s.get("restartCount", 0)
                    for s in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])}
        return PodSeen(
            name=name, uid=uid, restarts=restarts,
            annotation=(pod["metadata"].get("annotations") or {}).get(c.RELEASE),
            agent_release=agent.get("release"), asked=agent.get("asked") or {},
            signalled=agent.get("signalled") or {}, current=current,
            marker=current is not None and (volume / current / ".cfo-release.json").is_file(),
            served=tuple(answer(status.get("podIP", "")) for _ in range(4)),
            workers=(agent.get("puma") or {}).get("workers"))

    def _agent_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        """A just restarted agent may need a moment to answer."""
        for _ in range(20):
            try:
                code, status = self.product.agent(pod).call("GET", "/v1/status")
                if code == 200:
                    return status
            except OSError:
                pass
            time.sleep(0.5)
        return {}

    def sample_controller(self) -> None:
        for pod in self.product.pods("controller"):
            ip = (pod.get("status") or {}).get("podIP")
            if not ip or pod["metadata"].get("deletionTimestamp"):
                continue
            try:
                with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                continue
            sample = controller_sample(time.monotonic(), pod["metadata"]["name"], text)
            if sample is not None:
                self.controller.append(sample)

    # --- reporting --------------------------------------------------------------------------

    def while_failing(self, seen: TrialSeen) -> str:
        """What the Service's endpoints, the pods, the kubelet's probes and kube-proxy did from 5 s
        before the trial's first failed request to 5 s after its last."""
        start, end = min(seen.failures), max(seen.failures)
        to_wall = time.time() - time.monotonic()
        logs = self.app.node.workdir / "logs"
        lines = [f"seed {seen.seed}: {len(seen.failures)} requests failed from {start - seen.started_at:.1f}s to "
                 f"{end - seen.started_at:.1f}s into the trial ({seen.failure_kinds}); meanwhile (s from the first):"]
        for timeline in self.timelines:
            lines += timeline.around(start, end)
            lines += [f"(its watch ended with: {error})" for error in timeline.errors[-2:]]
        lines += log_lines(logs / "kubelet.log", to_wall + start - 5, to_wall + end + 5,
                           ("Probe failed", "readiness", "Killing", "SyncLoop", "restart", "Container"))[-60:]
        lines += log_lines(logs / "kube-proxy.log", to_wall + start - 5, to_wall + end + 5, ("",))[-30:]
        return "\n  ".join(lines)

    def describe(self, seen: TrialSeen, violations: list[str]) -> str:
        phase = seen.rollout.get("phase")
        ours, _ = killed_master_failures(seen)
        settle = f"{seen.settle_seconds:.0f}s" if seen.settle_seconds is not None else "not settled"
        line = (f"trial {len(self.results)} seed {seen.seed} {seen.fault} ({seen.variant}): {phase} of "
                f"{seen.rollout.get('release')} in {settle}, {seen.requests} requests, {len(seen.failures)} failed"
                + (f" ({ours} of the killed Puma master)" if seen.puma_kill else ""))
        if not violations:
            return line + ": ok"
        return "\n  ".join([line + ": VIOLATED", *violations, f"replay: {replay_command(seen)}"])

    def violations(self) -> list[str]:
        """Every broken invariant so far: per trial (with its replay command), then the controller's."""
        out = [f"seed {seen.seed} ({seen.fault}, {seen.variant}): {v}  [replay: {replay_command(seen)}]"
               for seen, violations in self.results for v in violations]
        return out + controller_violations(self.controller, self.limits) + (
            ["what was seen while requests failed:", *self.diagnoses] if out and self.diagnoses else [])

    def report(self, seed: int, trials: int, fault: str | None) -> dict[str, Any]:
        return {
            "profile": {"seed": seed, "trials": trials, "fault": fault, "rate": self.rate,
                        "replicas": self.app.replicas, "bound_seconds": BOUND_SECONDS},
            "duration_seconds": round(time.monotonic() - self.started, 1),
            "table": table(self.results),
            "controller": controller_summary(self.controller),
            "violations": self.violations(),
            "diagnoses": self.diagnoses,
            "trials": [{"seed": s.seed, "fault": s.fault, "variant": s.variant, "releases": list(s.releases),
                        "phase": s.rollout.get("phase"), "message": s.rollout.get("message"),
                        "settle_seconds": s.settle_seconds, "requests": s.requests,
                        "failed_requests": len(s.failures), "violations": v, "replay": replay_command(s),
                        **({"endpoint_left_after_kill_seconds": round(s.puma_kill.left_at - s.puma_kill.killed_at, 2)}
                           if s.puma_kill and s.puma_kill.left_at else {}),
                        **({"seen": s.to_json()} if v else {})} for s, v in self.results],
        }


def run_trials(app: WebApp, seeds: Iterable[int], fault: str | None = None, rate: float = RATE,
               log: Callable[[str], None] = print,
               after_each: Callable[[ChaosRun], None] | None = None) -> ChaosRun:
    """Deploy the chaos app, start the load, and run one trial per seed (`after_each` is called
    after every trial: the long profile writes its report each time, so a stopped run keeps it)."""
    run = ChaosRun(app, rate=rate, log=log).start()
    try:
        for seed in seeds:
            run.trial(seed, fault)
            if after_each is not None:
                after_each(run)
    finally:
        run.stop()
    return run


def answer(ip: str) -> str:
    """The release named by one answer of a pod itself (`<release> <worker pid>`), or the error."""
    try:
        conn = http.client.HTTPConnection(ip, PUMA_PORT, timeout=5)
        conn.request("POST", "/", body=b"")
        response = conn.getresponse()
        body = response.read().decode().split()
        conn.close()
        return body[0] if response.status == 200 and body else f"HTTP {response.status}"
    except OSError as err:
        return type(err).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1, help="the first trial's seed; trial i has seed + i")
    parser.add_argument("--seeds", help="these seeds (comma-separated) instead of --seed and --trials")
    parser.add_argument("--fault", choices=FAULTS, help="force one fault (default: each seed's own)")
    parser.add_argument("--rate", type=float, default=RATE)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("CFO_NODE_WAIT", "1800")
    with tempfile.TemporaryDirectory(prefix="cfo-chaos-") as tmp, running_node(Path(tmp) / "node") as node:
        sources = Sources(Path(tmp) / "sources").start()
        for proc in sources.processes():
            node.adopt(proc)
        try:
            product = Product(node, sources, Path(tmp) / "product").install()
            app = WebApp(node, product, "chaos")

            def write(run: ChaosRun) -> None:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(run.report(args.seed, len(run.results), args.fault), indent=1) + "\n")

            seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else range(args.seed, args.seed + args.trials)
            run = run_trials(app, seeds, args.fault, args.rate,
                             log=lambda line: print(line, flush=True), after_each=write)
            report = run.report(args.seed, len(run.results), args.fault)
        finally:
            sources.stop()
    print(f"\n{len(report['trials'])} trials in {report['duration_seconds']:.0f}s; controller: "
          f"{report['controller']}\n\n{format_table(report['table'])}\n\nwritten to {args.out}")
    for violation in report["violations"]:
        print(f"VIOLATED {violation}")
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
