"""The agent against real Puma under a constant POST load, with S3 from moto on loopback.

Puma and the agent share the host's PID namespace here, as they share the pod's in a
cluster (shareProcessNamespace). Figures (failed requests, p99) are printed with -s.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from testbed.controlplane import ROOT
from testbed.load import Load
from testbed.puma_app import AgentClient, AgentProcess, MotoS3, Puma, publish, release_archive
from testbed.webhook import ensure_certs

pytestmark = pytest.mark.integration

RATE = 200.0
# Behind a buffering proxy (ingress, ALB), as in production. With Puma 5.6's default
# (queue_requests true) a worker stopped for a phased restart can reset a connection it has
# just accepted into its reactor: about 1 in 80 worker stops under CPU contention here. The
# README's Puma settings say so; this suite runs the recommended configuration.
PUMA_CONFIG = ("queue_requests false",)
# A release whose workers cannot boot: the agent's own deadline stays the default, and the
# failure (with the revert done) must come from the crash loop, long before that deadline.
BROKEN_DEADLINE = 120
BROKEN_REPORTED_WITHIN = 30.0


@dataclass
class Pod:
    """One 'pod': a code volume, Puma on it, the agent beside it, and a client with the controller's cert."""

    code: Path
    artifacts: Path
    puma: Puma
    agent: AgentProcess
    client: AgentClient
    certs: Path

    @property
    def source(self) -> str:
        return f"file://{self.artifacts}/{{release}}.tar.gz"

    def current(self) -> str:
        return os.readlink(self.code / "current")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = MotoS3(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


def init_fetch(code: Path, release: str, source: str, env: dict[str, str]) -> None:
    """The init container: `cfo-agent fetch` with the env the webhook injects."""
    subprocess.run([sys.executable, "-m", "customer_friendly.agent", "fetch"], cwd=ROOT, check=True,
                    capture_output=True,
                   env={**os.environ, **env, "CFO_CODE_PATH": str(code), "CFO_RELEASE_DEFAULT": release,
                        "CFO_SOURCE_DEFAULT": source})


def start_pod(tmp_path: Path, moto: MotoS3, releases: tuple[str, ...] = ("v1", "v2", "v3"),
              agent_env: dict[str, str] | None = None, control_app: bool = True, **puma_options: object) -> Pod:
    """Publish releases, run the init step for v1, start Puma and the agent beside it."""
    certs = tmp_path / "certs"
    ensure_certs(certs)
    artifacts = tmp_path / "artifacts"
    for release in releases:
        publish(artifacts, release, release_archive(release))
    publish(artifacts, "broken", release_archive("broken", broken=True))
    code = tmp_path / "code"
    init_fetch(code, "v1", f"file://{artifacts}/{{release}}.tar.gz", moto.env)
    puma = Puma(code, tmp_path, extra_config=PUMA_CONFIG, **puma_options).start()  # type: ignore[arg-type]  # Puma's own keywords
    # By its pidfile, not by title: this host's PID namespace may hold other Pumas (other tests',
    # or a real node's pods), and the oldest one by title would be watched, and signalled, instead.
    env = {**moto.env, "CFO_RESTART_DEADLINE_SECONDS": "20", "CFO_PUMA_PIDFILE": str(puma.pidfile),
           **(agent_env or {})}
    if control_app:  # watch restarts through Puma's /stats rather than /proc
        env |= {"CFO_PUMA_CONTROL_URL": puma.control_url, "CFO_PUMA_CONTROL_TOKEN": puma.token}
    agent = AgentProcess(code, tmp_path, certs / "ca.crt", env).start()
    client = AgentClient(agent.url, certs / "controller.crt", certs / "controller.key")
    return Pod(code, artifacts, puma, agent, client, certs)


@pytest.fixture
def pod(tmp_path: Path, moto: MotoS3) -> Iterator[Pod]:
    started = start_pod(tmp_path, moto)
    yield started
    started.agent.stop()
    started.puma.stop()


def release_under_load(pod: Pod, body: dict, expect_state: str = "done") -> tuple[Load, dict, float, float]:
    load = Load("127.0.0.1", pod.puma.port, rate=RATE).start()
    time.sleep(1.5)
    started = time.monotonic()
    code, _ = pod.client.call("POST", "/v1/release" if "release" in body else "/v1/rollback", body)
    assert code == 202
    status = pod.client.wait(timeout=60)
    finished = time.monotonic()
    time.sleep(1.5)
    load.stop()
    assert status["state"] == expect_state, status
    return load, status, started, finished


def report(name: str, load: Load, started: float, finished: float) -> None:
    during = load.between(started, finished)
    before = [s for s in load.samples if s.sent_at < started]
    print(f"\n[{name}] sent={len(load.samples)} failed={len(load.failures())} "
          f"p99 before={Load.p99(before) * 1000:.1f}ms during={Load.p99(during) * 1000:.1f}ms "
          f"restart={finished - started:.1f}s")


def test_a_phased_restart_to_v2_under_load_drops_nothing(pod: Pod) -> None:
    workers_before = pod.puma.worker_pids()
    load, status, started, finished = release_under_load(
        pod, {"release": "v2", "source": pod.source, "restart": "phased"})
    report("phased v1->v2", load, started, finished)
    assert load.failures() == []
    assert len(load.samples) > RATE * 3
    assert {s.body for s in load.samples if s.sent_at > finished + 0.2} == {"v2"}
    assert status["release"] == "v2" and status["previous"] == "v1"
    assert pod.puma.stats()["phase"] == 1
    assert set(pod.puma.worker_pids()).isdisjoint(workers_before)


def test_the_same_release_twice_is_a_no_op(pod: Pod) -> None:
    pod.client.call("POST", "/v1/release", {"release": "v2", "source": pod.source})
    pod.client.wait()
    workers = pod.puma.worker_pids()
    code, status = pod.client.call("POST", "/v1/release", {"release": "v2", "source": pod.source})
    assert code == 200 and status["state"] == "done"
    assert pod.puma.worker_pids() == workers
    assert status["asked"] == {"v2": 2}  # both requests are counted; only the first did anything


def test_a_hot_restart_under_load_drops_nothing(pod: Pod) -> None:
    load, _status, started, finished = release_under_load(
        pod, {"release": "v2", "source": pod.source, "restart": "hot"})
    report("hot v1->v2", load, started, finished)
    assert load.failures() == []
    assert {s.body for s in load.samples if s.sent_at > finished + 0.2} == {"v2"}


def test_a_rollback_under_load_drops_nothing(pod: Pod) -> None:
    pod.client.call("POST", "/v1/release", {"release": "v2", "source": pod.source})
    assert pod.client.wait()["state"] == "done"
    load, status, started, finished = release_under_load(pod, {"restart": "phased"})
    report("rollback v2->v1", load, started, finished)
    assert load.failures() == []
    assert status["release"] == "v1"
    assert {s.body for s in load.samples if s.sent_at > finished + 0.2} == {"v1"}


def test_a_release_that_cannot_boot_is_undone_by_the_agent_and_the_rollback_restarts_nothing(pod: Pod) -> None:
    pod.client.call("POST", "/v1/release", {"release": "v2", "source": pod.source})
    assert pod.client.wait()["state"] == "done"
    links = {name: os.readlink(pod.code / name) for name in ("current", "previous")}
    assert links == {"current": "releases/v2", "previous": "releases/v1"}
    load = Load("127.0.0.1", pod.puma.port, rate=RATE).start()
    time.sleep(1)
    started = time.monotonic()
    code, _ = pod.client.call("POST", "/v1/release", {"release": "broken", "source": pod.source,
                                                      "deadlineSeconds": BROKEN_DEADLINE})
    assert code == 202
    failed = pod.client.wait(timeout=BROKEN_REPORTED_WITHIN + 30)
    finished = time.monotonic()
    print(f"\n[broken release, phased] failed and undone {finished - started:.1f}s after the request "
          f"(deadline {BROKEN_DEADLINE}s): {failed['error']}")
    assert failed["state"] == "failed", failed
    # The crash loop ends the restart, not the deadline: reported, undone and Puma back on v2 long before it.
    assert finished - started < BROKEN_REPORTED_WITHIN
    assert re.match(r"release broken cannot boot: \d+ new workers exited during the phased restart; "
                    "the old workers keep serving", failed["error"]), failed["error"]
    assert "Puma restarted on the old release (phased restart)" in failed["error"]
    assert (failed["reverted"], failed["puma_restored"]) == (True, True)
    assert (failed["release"], failed["previous"]) == ("v2", "v1")
    assert {name: os.readlink(pod.code / name) for name in ("current", "previous")} == links
    stats = pod.puma.stats()
    assert stats["booted_workers"] == 2 and stats["old_workers"] == 0 and stats["phase"] == 3
    workers = pod.puma.worker_pids()

    # The controller's rollback asks this pod for v2 again: nothing to do, Puma is not signalled.
    code, again = pod.client.call("POST", "/v1/release", {"release": "v2", "source": pod.source})
    assert code == 200 and again["state"] == "done" and again["target"] == "v2" and again["release"] == "v2"
    assert again["asked"] == {"v2": 2, "broken": 1}
    time.sleep(1.5)
    load.stop()
    print(f"\n[broken release undone by the agent] sent={len(load.samples)} failed={len(load.failures())} "
          f"p99={Load.p99(load.samples) * 1000:.1f}ms")
    assert load.failures() == []
    assert {s.body for s in load.samples if s.sent_at > finished + 0.2} == {"v2"}
    assert pod.puma.worker_pids() == workers and pod.puma.stats()["phase"] == 3


def test_a_hot_restart_onto_a_release_that_cannot_boot_is_undone_too(pod: Pod) -> None:
    """Every worker of a hot restart is a new process, even one that crash-loops: the agent must
    not take them for booted (Puma's control app), fail on their crash loop, and hot-restart Puma
    back. Requests wait while no worker can boot (the listeners are kept), so none are counted here."""
    started = time.monotonic()
    code, _ = pod.client.call("POST", "/v1/release", {"release": "broken", "source": pod.source, "restart": "hot",
                                                      "deadlineSeconds": BROKEN_DEADLINE})
    assert code == 202
    failed = pod.client.wait(timeout=BROKEN_REPORTED_WITHIN + 30)
    finished = time.monotonic()
    print(f"\n[broken release, hot] failed and undone {finished - started:.1f}s after the request "
          f"(deadline {BROKEN_DEADLINE}s): {failed['error']}")
    assert failed["state"] == "failed", failed
    assert finished - started < BROKEN_REPORTED_WITHIN
    assert re.match(r"release broken cannot boot: \d+ new workers exited during the hot restart; ",
                    failed["error"]), failed["error"]
    assert "Puma restarted on the old release (hot restart)" in failed["error"]
    assert (failed["reverted"], failed["puma_restored"], failed["release"]) == (True, True, "v1")
    assert pod.current() == "releases/v1" and not (pod.code / "previous").exists()
    assert pod.puma.stats()["booted_workers"] == 2
    load = Load("127.0.0.1", pod.puma.port, rate=RATE).start()
    time.sleep(1)
    load.stop()
    assert load.failures() == [] and {s.body for s in load.samples} == {"v1"}


def bad_archive_with(member: tarfile.TarInfo) -> bytes:
    return release_archive("bad", extra=[member])


def traversal() -> tarfile.TarInfo:
    info = tarfile.TarInfo("../../etc/cron.d/evil")
    info.size = 1
    return info


@pytest.mark.parametrize(("case", "prepare", "message"), [
    ("corrupt archive", lambda a: (a / "bad.tar.gz").write_bytes(b"\x1f\x8bnot gzip at all"), "cannot be read"),
    ("wrong checksum", lambda a: publish(a, "bad", release_archive("bad"), checksum="0" * 64), "checksum mismatch"),
    ("path traversal", lambda a: publish(a, "bad", bad_archive_with(traversal())), "contains '..'"),
])
def test_a_bad_artifact_is_refused_and_puma_is_never_signalled(pod: Pod, case: str, prepare, message: str) -> None:
    prepare(pod.artifacts)
    workers = pod.puma.worker_pids()
    code, _ = pod.client.call("POST", "/v1/release", {"release": "bad", "source": pod.source})
    assert code == 202
    status = pod.client.wait()
    assert status["state"] == "failed" and message in status["error"], status
    assert pod.current() == "releases/v1"
    assert pod.puma.worker_pids() == workers and pod.puma.stats()["phase"] == 0
    assert sorted(p.name for p in (pod.code / "releases").iterdir()) == ["v1"]


def test_releases_come_from_s3_through_the_standard_endpoint_setting(pod: Pod, moto: MotoS3) -> None:
    s3 = boto3.client("s3", endpoint_url=moto.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="acme-releases")
    s3.put_object(Bucket="acme-releases", Key="web/v3.tar.gz", Body=release_archive("v3"))
    source = "s3://acme-releases/web/{release}.tar.gz"
    pod.client.call("POST", "/v1/release", {"release": "v3", "source": source})
    assert pod.client.wait()["release"] == "v3"
    workers = pod.puma.worker_pids()
    pod.client.call("POST", "/v1/release", {"release": "v404", "source": source})
    missing = pod.client.wait()
    assert missing["state"] == "failed" and "not found" in missing["error"] and "NoSuchKey" in missing["error"]
    assert pod.current() == "releases/v3" and pod.puma.worker_pids() == workers


def test_a_second_operation_while_one_runs_is_told_busy(pod: Pod) -> None:
    assert pod.client.call("POST", "/v1/release", {"release": "v2", "source": pod.source})[0] == 202
    code, body = pod.client.call("POST", "/v1/release", {"release": "v3", "source": pod.source})
    assert code == 409 and "busy" in body["error"]
    pod.client.wait()


def test_bad_requests_are_refused_with_the_field_named(pod: Pod) -> None:
    code, body = pod.client.call("POST", "/v1/release", {"release": "../v2", "source": pod.source})
    assert code == 400 and "release must be" in body["error"]
    code, body = pod.client.call("POST", "/v1/release", {"release": "v2", "source": pod.source, "restart": "x"})
    assert code == 400 and "restart must be" in body["error"]


def test_without_a_client_certificate_the_api_refuses(pod: Pod) -> None:
    anonymous = AgentClient(pod.agent.url, None, None)
    code, body = anonymous.call("GET", "/v1/status")
    assert code == 401 and "client certificate" in body["error"]
    assert anonymous.call("GET", "/healthz")[0] == 200


def test_a_client_certificate_from_another_ca_is_refused(pod: Pod, tmp_path: Path) -> None:
    ensure_certs(tmp_path / "other")
    stranger = AgentClient(pod.agent.url, tmp_path / "other" / "controller.crt", tmp_path / "other" / "controller.key")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        stranger.call("GET", "/v1/status")


@pytest.fixture
def constrained_pod(request: pytest.FixtureRequest, tmp_path: Path, moto: MotoS3) -> Iterator[Pod]:
    """A pod whose Puma cannot phase-restart: single mode (workers 0) or preload_app! on.

    This agent watches through /proc (no control app).
    """
    puma_config = tmp_path / "puma.rb"
    started = start_pod(tmp_path, moto, ("v1", "v2"),
                        {"CFO_PUMA_PIDFILE": str(tmp_path / "puma.pid"), "CFO_PUMA_CONFIG": str(puma_config)},
                        control_app=False,
                        workers=0 if request.param == "single" else 2, preload=request.param == "preload")
    yield started
    started.agent.stop()
    started.puma.stop()


@pytest.mark.parametrize("constrained_pod", ["single", "preload"], indirect=True)
def test_a_phased_restart_that_cannot_happen_is_refused_before_anything_moves(constrained_pod: Pod) -> None:
    pod = constrained_pod
    reason = "single mode" if pod.puma.workers == 0 else "preload_app! is on"
    pod.client.call("POST", "/v1/release", {"release": "v2", "source": pod.source, "restart": "phased"})
    refused = pod.client.wait()
    assert refused["state"] == "failed" and "phased restart is impossible" in refused["error"]
    assert reason in refused["error"]
    assert pod.current() == "releases/v1"

    load = Load("127.0.0.1", pod.puma.port, rate=RATE).start()
    time.sleep(1)
    started = time.monotonic()
    pod.client.call("POST", "/v1/release", {"release": "v2", "source": pod.source, "restart": "phased",
                                            "allowHot": True})
    done = pod.client.wait()
    finished = time.monotonic()
    time.sleep(1.5)
    load.stop()
    report(f"hot instead of phased ({reason})", load, started, finished)
    assert done["state"] == "done" and done["restart"] == "hot" and reason in done["note"], done
    assert load.failures() == []
    assert {s.body for s in load.samples if s.sent_at > finished + 0.5} == {"v2"}


class WorkerCounts:
    """Samples Puma's /stats during a release: the most workers seen, and the phase of each worker
    index seen booted (the surge worker's index is the original worker count)."""

    def __init__(self, puma: Puma) -> None:
        self.puma, self.peak = puma, 0
        self.booted_phases: dict[int, set[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                statuses = self.puma.stats().get("worker_status", [])
                self.peak = max(self.peak, len(statuses))
                for worker in statuses:
                    if worker.get("booted"):
                        self.booted_phases.setdefault(worker["index"], set()).add(worker["phase"])
            time.sleep(0.05)

    def __enter__(self) -> WorkerCounts:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_a_surge_worker_serves_the_new_release_and_the_worker_count_returns(pod: Pod) -> None:
    """TTIN right after USR1: Puma boots a third worker on v2 and stops an old one only once all
    are booted; TTOU then gives the extra one back (Puma culls the youngest)."""
    workers_before = pod.puma.worker_pids()
    with WorkerCounts(pod.puma) as counts:
        load, status, started, finished = release_under_load(
            pod, {"release": "v2", "source": pod.source, "restart": "phased", "surge": True})
    report("phased v1->v2 with a surge worker", load, started, finished)
    assert load.failures() == []
    assert counts.peak == 3, counts.peak  # one worker more than the pod has, never more
    assert counts.booted_phases.get(2) == {1}, counts.booted_phases  # the surge slot only ever ran v2
    stats = pod.puma.stats()
    assert (stats["phase"], stats["workers"], stats["booted_workers"], stats["old_workers"]) == (1, 2, 2, 0)
    assert set(pod.puma.worker_pids()).isdisjoint(workers_before)
    assert {s.body for s in load.samples if s.sent_at > finished + 0.2} == {"v2"}
    assert status["puma"]["surge"] is True and status["release"] == "v2"


def test_a_surge_watched_through_proc_alone_also_ends_with_the_workers_it_started_with(
        tmp_path: Path, moto: MotoS3) -> None:
    started_pod = start_pod(tmp_path, moto, control_app=False)
    try:
        code, _ = started_pod.client.call("POST", "/v1/release", {"release": "v2", "source": started_pod.source,
                                                                  "restart": "phased", "surge": True})
        assert code == 202
        status = started_pod.client.wait(timeout=60)
        assert status["state"] == "done", status
        assert status["puma"]["workersExpected"] == 3 and status["puma"]["surge"] is True
        assert len(started_pod.puma.worker_pids()) == 2  # TTOU culled the extra worker
        assert started_pod.puma.stats()["phase"] == 1
    finally:
        started_pod.agent.stop()
        started_pod.puma.stop()
