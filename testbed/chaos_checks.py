"""The chaos suite's invariants, as pure functions over what a trial saw.

`testbed/chaos.py` runs a trial on the real node (a release, one fault at a seeded moment, under
load) and collects a `TrialSeen`; everything here only reads it and returns the broken
invariants, one clear sentence each. No I/O, so every rule has plain table-driven tests
(tests/unit/test_chaos_checks.py) and a failing trial can be judged again from its JSON.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from customer_friendly.contract.rollout import COMPLETE, FAILED, ROLLED_BACK, Rollout

FAULTS = ("controller", "agent", "puma", "supersede", "rollback", "source", "apiserver", "webhook")
"""One fault per trial. controller: the leader's process SIGKILLed or its pod deleted; agent: the
agent container of one pod killed; puma: the Puma master of one pod killed; supersede: a second
release annotated while the first is in flight; rollback: the previous release asked for again
mid-batch; source: the S3 server stopped for a few seconds, then started again; apiserver:
kube-apiserver stopped for a few seconds and restarted; webhook: a webhook pod deleted while the
Deployment is applied."""

AGENT, PUMA = "cfo-agent", "puma"
WORKERS = 2
"""Puma workers per pod in the chaos app (node_app.PUMA_CONFIG)."""
IN_FLIGHT_SECONDS = 1.0
"""A request sent this long before the Puma master was killed may still have been in flight."""
PROXY_LAG_SECONDS = 2.0
"""After the pod's endpoint left the EndpointSlice, kube-proxy may need this long to reprogram
iptables: a request sent meanwhile can still reach the dead pod. Later, nothing may fail."""


def fault_of(seed: int) -> str:
    """The fault a seed stands for when none is forced: the seed alone replays a trial."""
    return FAULTS[seed % len(FAULTS)]


@dataclass(frozen=True)
class PodSeen:
    """One app pod, as the node, its agent, its volume and its own answers show it."""

    name: str
    uid: str
    restarts: dict[str, int]
    """restartCount per container (our native sidecar included)."""
    annotation: str | None
    """customer-friendly.dev/release on the pod: what the controller marked it with."""
    agent_release: str | None
    asked: dict[str, int]
    signalled: dict[str, int]
    current: str | None
    """The `current` link on the pod's volume (relative, `releases/<id>`)."""
    marker: bool
    """The release `current` points at is whole: its `.cfo-release.json` is there."""
    served: tuple[str, ...]
    """The release named by each answer of the pod itself (POSTs to its IP)."""
    workers: int | None

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "served": list(self.served)}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PodSeen:
        return cls(**{**body, "served": tuple(body["served"])})


@dataclass(frozen=True)
class PumaKill:
    pod: str
    killed_at: float
    left_at: float | None
    """When the pod's endpoint was first seen not ready (or gone) after the kill; None: never."""


@dataclass(frozen=True)
class TrialSeen:
    """Everything a trial collected. Times are time.monotonic(), the load generator's clock."""

    seed: int
    fault: str
    variant: str
    """What exactly was done, for people (e.g. `SIGKILL` or `pod deleted`, the pod, the moment)."""
    releases: tuple[str, ...]
    """The releases asked for during the trial, in order; the last one is the one wanted."""
    started_at: float
    ended_at: float
    before: dict[str, PodSeen]
    after: dict[str, PodSeen]
    replicasets_before: tuple[str, ...]
    replicasets_after: tuple[str, ...]
    replicas: int
    peak_pods: int
    rollout: dict[str, Any]
    """The Deployment's rollout record (its wire form) once the trial ended."""
    settle_seconds: float | None
    """From the last release asked to a final phase with no batch in flight; None: not within the bound."""
    bound_seconds: float
    requests: int
    failures: tuple[float, ...]
    """When each failed request of the trial's window was sent."""
    restarted: tuple[str, ...] = ()
    """`pod/container` that the fault itself killed (the kubelet restarts it once)."""
    puma_kill: PumaKill | None = None
    errors: tuple[str, ...] = ()
    """What went wrong while the trial ran (a command that failed): each one is a violation."""
    failure_kinds: dict[str, int] = field(default_factory=dict)
    """How the failed requests failed (the error, or the HTTP status), and how many each."""

    def to_json(self) -> dict[str, Any]:
        body = dict(self.__dict__)
        body["before"] = {n: p.to_json() for n, p in self.before.items()}
        body["after"] = {n: p.to_json() for n, p in self.after.items()}
        body["puma_kill"] = self.puma_kill.__dict__ if self.puma_kill else None
        for key in ("releases", "replicasets_before", "replicasets_after", "failures", "restarted", "errors"):
            body[key] = list(body[key])
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TrialSeen:
        values = dict(body)
        values["before"] = {n: PodSeen.from_json(p) for n, p in body["before"].items()}
        values["after"] = {n: PodSeen.from_json(p) for n, p in body["after"].items()}
        values["puma_kill"] = PumaKill(**body["puma_kill"]) if body.get("puma_kill") else None
        for key in ("releases", "replicasets_before", "replicasets_after", "failures", "restarted", "errors"):
            values[key] = tuple(body.get(key) or ())
        return cls(**values)


# --- the invariants ----------------------------------------------------------------------------

def killed_master_failures(seen: TrialSeen) -> tuple[int, list[str]]:
    """(failed requests counted against a killed Puma master, violations).

    Without a Puma kill no request may fail. With one, a failure counts against the killed master
    when it was sent from IN_FLIGHT_SECONDS before the kill until PROXY_LAG_SECONDS after the
    pod's endpoint left the Service; any other failure is a violation, and so is an endpoint
    that never left.
    """
    failures = seen.failures
    kill = seen.puma_kill
    if kill is None:
        if not failures:
            return 0, []
        first = min(failures) - seen.started_at
        kinds = f": {_kinds(seen.failure_kinds)}" if seen.failure_kinds else ""
        return 0, [f"{len(failures)} of {seen.requests} requests failed (the first sent {first:.1f}s into the "
                   f"trial){kinds}; no request may fail unless a Puma master is killed"]
    if kill.left_at is None:
        return len(failures), [f"the endpoint of {kill.pod} never left the Service after its Puma master was killed"]
    start, end = kill.killed_at - IN_FLIGHT_SECONDS, kill.left_at + PROXY_LAG_SECONDS
    ours = [f for f in failures if start <= f <= end]
    lost = [f for f in failures if not start <= f <= end]
    if not lost:
        return len(ours), []
    offsets = ", ".join(f"{f - kill.killed_at:+.1f}s" for f in sorted(lost)[:5])
    return len(ours), [f"{len(lost)} requests failed outside the killed master's window (sent at {offsets} from the "
                       f"kill; its endpoint left the Service {kill.left_at - kill.killed_at:.1f}s after the kill)"]


def _kinds(kinds: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda item: -item[1])[:3])


def rollout_violations(seen: TrialSeen) -> list[str]:
    """The rollout of the last release asked for ended Complete, Failed or RolledBack within the bound."""
    record = Rollout.from_wire(seen.rollout)
    wanted = seen.releases[-1] if seen.releases else None
    if record is None:
        return [f"no rollout record on the Deployment after the trial (wanted {wanted})"]
    if seen.settle_seconds is None or not record.settled:
        return [f"the rollout of {wanted} did not end Complete, Failed or RolledBack within {seen.bound_seconds:.0f}s: "
                f"last {record.phase} of {record.release}, batch {list(record.batch)}: {record.message}"]
    if record.release != wanted:
        return [f"the rollout record names {record.release}, but the last release asked for is {wanted}"]
    return []


def expected_release(record: Rollout, pod: PodSeen) -> str | None:
    """What a pod must serve once the rollout ended: the release when Complete, the previous one
    when RolledBack; after a plain Failed, whatever the controller marked the pod with, as long
    as that is one of the two."""
    if record.phase == COMPLETE:
        return record.release
    if record.phase == ROLLED_BACK:
        return record.previous
    if record.phase == FAILED and pod.annotation in (record.release, record.previous):
        return pod.annotation
    return None


def serving_violations(seen: TrialSeen) -> list[str]:
    """Every pod serves exactly what the record says, from a whole release, on all its workers."""
    record = Rollout.from_wire(seen.rollout)
    if record is None or not record.settled:
        return []  # rollout_violations says why
    out = []
    for pod in seen.after.values():
        wanted = expected_release(record, pod)
        if wanted is None:
            out.append(f"{pod.name} is marked {pod.annotation}, neither {record.release} nor {record.previous} "
                       f"after a {record.phase} rollout")
            continue
        if pod.current != f"releases/{wanted}":
            out.append(f"current on {pod.name}'s volume is {pod.current}, the rollout record says {wanted}")
        elif not pod.marker:
            out.append(f"current on {pod.name}'s volume points at {pod.current}, which is not a whole release "
                       f"(its .cfo-release.json is missing)")
        if set(pod.served) != {wanted}:
            out.append(f"{pod.name} answers with {sorted(set(pod.served))}, the rollout record says {wanted}")
        if pod.agent_release != wanted or pod.annotation != wanted:
            out.append(f"{pod.name}: its agent reports {pod.agent_release} and the pod is marked {pod.annotation}, "
                       f"the rollout record says {wanted}")
        if pod.workers is not None and pod.workers != WORKERS:
            out.append(f"Puma in {pod.name} runs {pod.workers} workers, not {WORKERS}")
    return out


def _counts_since(before: PodSeen | None, after: PodSeen, key: str) -> dict[str, int]:
    """What the pod's agent counted during the trial; a restarted agent counts from zero."""
    now: dict[str, int] = getattr(after, key)
    if before is None or after.restarts.get(AGENT, 0) != before.restarts.get(AGENT, 0):
        return dict(now)
    then: dict[str, int] = getattr(before, key)
    return {release: n - then.get(release, 0) for release, n in now.items() if n != then.get(release, 0)}


def once_violations(seen: TrialSeen) -> list[str]:
    """No agent was asked twice for one release, and no pod signalled twice for one release."""
    out = []
    for name, pod in sorted(seen.after.items()):
        before = seen.before.get(name)
        for release, n in sorted(_counts_since(before, pod, "asked").items()):
            if n > 1:
                out.append(f"the agent of {name} was asked {n} times to move to {release}")
        for release, n in sorted(_counts_since(before, pod, "signalled").items()):
            if n > 1:
                out.append(f"{name} was signalled {n} times for release {release}")
    return out


def pod_violations(seen: TrialSeen) -> list[str]:
    """No pod replaced, no extra pod, no new ReplicaSet, and no container restarted except the
    one the fault killed (once)."""
    out = []
    before_uids = {p.uid: n for n, p in seen.before.items()}
    after_uids = {p.uid: n for n, p in seen.after.items()}
    gone, new = sorted(set(before_uids) - set(after_uids)), sorted(set(after_uids) - set(before_uids))
    if gone or new:
        out.append(f"pods replaced: gone {[before_uids[u] for u in gone]}, new {[after_uids[u] for u in new]}")
    if seen.peak_pods > seen.replicas:
        out.append(f"{seen.peak_pods} pods existed at once, for {seen.replicas} replicas")
    if seen.replicasets_after != seen.replicasets_before:
        out.append(f"ReplicaSets changed from {list(seen.replicasets_before)} to {list(seen.replicasets_after)}")
    for name, pod in sorted(seen.after.items()):
        before = seen.before.get(name)
        if before is None:
            continue
        for container, count in sorted(pod.restarts.items()):
            allowed = 1 if f"{name}/{container}" in seen.restarted else 0
            grew = count - before.restarts.get(container, 0)
            if grew > allowed:
                out.append(f"{name}/{container} restarted {grew} times ({allowed} expected from the fault)")
            elif grew < allowed:
                out.append(f"{name}/{container} was killed but its restartCount did not go up")
    return out


def trial_violations(seen: TrialSeen) -> list[str]:
    """Every invariant of one trial, in a fixed order; the runner's own errors first."""
    return [*(f"while the trial ran: {e}" for e in seen.errors), *killed_master_failures(seen)[1],
            *rollout_violations(seen), *serving_violations(seen), *once_violations(seen), *pod_violations(seen)]


# --- the controller across trials --------------------------------------------------------------

@dataclass(frozen=True)
class ControllerSample:
    """One controller process's /metrics at the end of a trial."""

    at: float
    pod: str
    started: float
    """process_start_time_seconds: with the pod, names one process."""
    rss_bytes: float
    api_requests: float
    """cfo_controller_api_requests_total so far."""


@dataclass(frozen=True)
class ControllerLimits:
    rss_bytes: float = 200 * 2**20
    """No controller process may use more memory than this."""
    rss_growth_bytes: float = 40 * 2**20
    """One process may grow this much at most from its first sample to its last (a leak grows
    with the trials; a warm-up does not)."""
    api_requests_per_second: float = 25.0
    """Averaged between two samples of one process (over a trial, at least tens of seconds)."""


def parse_metrics(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text exposition (`name value`); labelled ones are skipped."""
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#") and "{" not in parts[0]:
            try:
                values[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return values


def controller_sample(at: float, pod: str, metrics_text: str) -> ControllerSample | None:
    values = parse_metrics(metrics_text)
    try:
        return ControllerSample(at, pod, values["process_start_time_seconds"], values["process_resident_memory_bytes"],
                                values["cfo_controller_api_requests_total"])
    except KeyError:
        return None


def _by_process(samples: Iterable[ControllerSample]) -> dict[tuple[str, float], list[ControllerSample]]:
    """The samples of each controller process (pod and start time), oldest first."""
    by_process: dict[tuple[str, float], list[ControllerSample]] = {}
    for sample in sorted(samples, key=lambda s: s.at):
        by_process.setdefault((sample.pod, sample.started), []).append(sample)
    return by_process


def _rate(a: ControllerSample, b: ControllerSample) -> float:
    return (b.api_requests - a.api_requests) / max(b.at - a.at, 1e-9)


def controller_violations(samples: Iterable[ControllerSample], limits: ControllerLimits) -> list[str]:
    """The controller's memory and API request rate stay bounded across trials."""
    out = []
    for (pod, _), seen in _by_process(samples).items():
        peak = max(s.rss_bytes for s in seen)
        if peak > limits.rss_bytes:
            out.append(f"controller {pod} used {peak / 2**20:.0f} MiB, over {limits.rss_bytes / 2**20:.0f} MiB")
        growth = seen[-1].rss_bytes - seen[0].rss_bytes
        if growth > limits.rss_growth_bytes:
            out.append(f"controller {pod} grew {growth / 2**20:.0f} MiB over {len(seen)} trials "
                       f"(more than {limits.rss_growth_bytes / 2**20:.0f} MiB)")
        for a, b in itertools.pairwise(seen):
            rate = _rate(a, b)
            if rate > limits.api_requests_per_second:
                out.append(f"controller {pod} made {rate:.1f} API requests/s over {b.at - a.at:.0f}s "
                           f"(more than {limits.api_requests_per_second:.0f}/s)")
    return out


def controller_summary(samples: Iterable[ControllerSample]) -> dict[str, float]:
    """Peak memory and peak API request rate of the controller processes, for the report."""
    by_process = _by_process(samples)
    rss = [s.rss_bytes for seen in by_process.values() for s in seen]
    rates = [_rate(a, b) for seen in by_process.values() for a, b in itertools.pairwise(seen)]
    return {"processes": len(by_process), "peak_rss_mib": round(max(rss, default=0) / 2**20, 1),
            "peak_api_requests_per_second": round(max(rates, default=0.0), 2)}


# --- the table ---------------------------------------------------------------------------------

@dataclass
class Row:
    fault: str
    trials: int = 0
    completed: int = 0
    rolled_back: int = 0
    failed: int = 0
    failed_requests: int = 0
    killed_master_requests: int = 0
    violations: int = 0
    requests: int = 0
    settle: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        median = statistics.median(self.settle) if self.settle else math.nan
        return {"fault": self.fault, "trials": self.trials, "completed": self.completed,
                "rolled_back": self.rolled_back, "failed": self.failed, "requests": self.requests,
                "failed_requests": self.failed_requests, "of_killed_puma_master": self.killed_master_requests,
                "violations": self.violations,
                "median_settle_seconds": None if math.isnan(median) else round(median, 1)}


def table(trials: Iterable[tuple[TrialSeen, list[str]]]) -> list[dict[str, Any]]:
    """One row per fault kind (in FAULTS order), and a total."""
    rows = {fault: Row(fault) for fault in FAULTS}
    total = Row("all")
    for seen, violations in trials:
        phase = (seen.rollout or {}).get("phase")
        ours, _ = killed_master_failures(seen)
        for row in (rows.setdefault(seen.fault, Row(seen.fault)), total):
            row.trials += 1
            row.completed += phase == COMPLETE
            row.rolled_back += phase == ROLLED_BACK
            row.failed += phase == FAILED
            row.requests += seen.requests
            row.failed_requests += len(seen.failures)
            row.killed_master_requests += ours
            row.violations += len(violations)
            if seen.settle_seconds is not None:
                row.settle.append(seen.settle_seconds)
    return [row.to_json() for row in (*rows.values(), total) if row.trials]


COLUMNS = (("fault", "fault"), ("trials", "trials"), ("completed", "Complete"), ("rolled_back", "RolledBack"),
           ("failed", "Failed"), ("requests", "requests"), ("failed_requests", "failed req"),
           ("of_killed_puma_master", "of killed master"), ("violations", "violations"),
           ("median_settle_seconds", "median settle s"))


def format_table(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown, the way README shows it."""
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join("-" if row[key] is None else str(row[key]) for key, _ in COLUMNS) + " |"
            for row in rows]
    return "\n".join([head, rule, *body])


def replay_command(seen: TrialSeen) -> str:
    return f"make chaos SEED={seen.seed} TRIALS=1 FAULT={seen.fault}"
