"""Real Puma (Debian's `puma`) serving a Rack app from a Capistrano-style code volume,
the real agent beside it in the same (host) PID namespace, and moto's S3 on loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.controlplane import ROOT, free_port, terminate, wait_ready

GOOD_APP = """RELEASE = "{release}"
run ->(env) {{ env["rack.input"].read; [200, {{"content-type" => "text/plain"}}, ["#{{RELEASE}}\\n"]] }}
"""
BROKEN_APP = 'raise "release {release} cannot boot: missing SECRET_KEY_BASE"\n'


def release_archive(release: str, broken: bool = False, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """A release tarball whose app answers every request with its release id."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        text = (BROKEN_APP if broken else GOOD_APP).format(release=release).encode()
        info = tarfile.TarInfo("config.ru")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
        for member in extra or []:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return buf.getvalue()


def publish(directory: Path, release: str, data: bytes, checksum: str | None = "auto") -> None:
    """Write `<release>.tar.gz` and, unless checksum is None, its `.sha256` (sha256sum format)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{release}.tar.gz").write_bytes(data)
    if checksum is not None:
        digest = hashlib.sha256(data).hexdigest() if checksum == "auto" else checksum
        (directory / f"{release}.tar.gz.sha256").write_text(f"{digest}  {release}.tar.gz\n")


@dataclass
class Puma:
    code: Path
    workdir: Path
    workers: int = 2
    preload: bool = False
    port: int = 0
    control_port: int = 0
    token: str = "test-control-token"
    extra_config: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pidfile(self) -> Path:
        return self.workdir / "puma.pid"

    @property
    def log(self) -> Path:
        return self.workdir / "puma.log"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def start(self) -> Puma:
        self.port, self.control_port = self.port or free_port(), self.control_port or free_port()
        config = self.workdir / "puma.rb"
        config.write_text("\n".join([
            f'directory "{self.code}/current"',  # re-resolved by each new worker: the phased restart
            'rackup "config.ru"',
            f"workers {self.workers}",
            "threads 4, 8",
            f'bind "tcp://127.0.0.1:{self.port}"',
            f'activate_control_app "tcp://127.0.0.1:{self.control_port}", {{ auth_token: "{self.token}" }}',
            f'pidfile "{self.pidfile}"',
            "worker_boot_timeout 10",
            "preload_app!" if self.preload else "preload_app! false" if self.workers else "",
            *self.extra_config,
            "",
        ]))
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(["puma", "-C", str(config)], cwd=self.workdir, stdout=fh,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

        def booted() -> bool:
            stats = self.stats()
            if not self.workers:
                return "running" in stats
            return stats.get("booted_workers") == self.workers

        wait_ready("puma", self.proc, booted, 30, self.log)
        return self

    def answers(self) -> bool:
        """A readiness probe: does Puma answer HTTP on its port?"""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1):
                return True
        except (OSError, urllib.error.HTTPError):
            return False

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.control_url}/stats?token={self.token}", timeout=2) as resp:
            return json.load(resp)

    def worker_pids(self) -> list[int]:
        return sorted(w["pid"] for w in self.stats().get("worker_status", []))

    def stop(self) -> None:
        terminate(self.proc, 15)


@dataclass
class AgentProcess:
    """`cfo-agent serve` as a child process, with the installation's client CA."""

    code: Path
    workdir: Path
    client_ca: Path
    env: dict[str, str]
    port: int = 0
    bind: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://{self.bind}:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "agent.log"

    def start(self) -> AgentProcess:
        self.port = self.port or free_port(self.bind)
        env = {**os.environ, **self.env, "CFO_CODE_PATH": str(self.code), "CFO_AGENT_BIND": self.bind,
               "CFO_AGENT_PORT": str(self.port), "CFO_CLIENT_CA_FILE": str(self.client_ca)}
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "customer_friendly.agent", "serve"], cwd=ROOT,
                                          env=env, stdout=fh,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.url}/healthz", context=context, timeout=2):
                return True

        wait_ready("cfo-agent", self.proc, healthy, 20, self.log)
        return self

    def stop(self) -> None:
        terminate(self.proc, 10)


class AgentClient:
    """What the controller will do: JSON over HTTPS with a client certificate."""

    def __init__(self, url: str, cert: Path | None, key: Path | None) -> None:
        self.url = url
        self.context = ssl.create_default_context()
        self.context.check_hostname, self.context.verify_mode = False, ssl.CERT_NONE
        if cert and key:
            self.context.load_cert_chain(cert, key)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    def wait(self, states: tuple[str, ...] = ("done", "failed"), timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, status = self.call("GET", "/v1/status")
            if status["state"] in states:
                return status
            time.sleep(0.1)
        raise TimeoutError(f"agent never reached {states}: {status}")


@dataclass
class MotoS3:
    workdir: Path
    port: int = 0
    host: str = "127.0.0.1"
    """The real node's pods reach it on the bridge's address, never on loopback."""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Standard AWS settings only: boto3 finds moto through its endpoint setting."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self) -> MotoS3:
        self.port = self.port or free_port(self.host)  # started again: the same address
        moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        log = self.workdir / "moto.log"
        with log.open("ab") as fh:
            self.proc = subprocess.Popen([moto, "-H", self.host, "-p", str(self.port)], stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)

        def answering() -> bool:
            with contextlib.suppress(urllib.error.HTTPError):  # any HTTP answer means it is up
                urllib.request.urlopen(f"{self.url}/", timeout=2).close()
            return True

        wait_ready("moto_server", self.proc, answering, 30, log)
        return self

    def stop(self) -> None:
        terminate(self.proc, 10)
