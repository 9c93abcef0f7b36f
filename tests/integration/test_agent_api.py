"""`cfo-agent serve` as a process, over real mutual TLS (issue 10 items 11-14): only the
controller's client identity is answered, idle and half-sent connections are closed, the
controller is still answered while 300 idle connections are open, the key is nowhere on the
code volume, and the controller pins the agent's certificate."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from customer_friendly.certs.pki import LeafSpec, Usage, create_ca, issue
from customer_friendly.controller.agents import AgentClient, AgentError
from testbed.puma_app import AgentProcess
from testbed.webhook import ensure_certs
from tests.unit.test_agent_server import closed_by_peer

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC)
GET = b"GET /v1/status HTTP/1.1\r\nHost: agent\r\n\r\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("certs")
    ensure_certs(path)
    other = create_ca("another installation", 30, NOW)  # same names, another CA
    stranger = issue(other, LeafSpec("customer-friendly-controller", Usage.CLIENT), 30, NOW)
    (path / "stranger.crt").write_bytes(stranger.cert_pem())
    (path / "stranger.key").write_bytes(stranger.key_pem())
    return path


@pytest.fixture(scope="module")
def agent(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    home = tmp_path_factory.mktemp("agent")
    (home / "code").mkdir()
    process = AgentProcess(home / "code", home, certs / "ca.crt", {
        "CFO_AGENT_IDLE_SECONDS": "2", "CFO_AGENT_HANDSHAKE_SECONDS": "2", "CFO_AGENT_REQUEST_SECONDS": "2",
        "CFO_PUMA_PIDFILE": str(home / "no-puma.pid")}).start()
    yield process
    process.stop()


def context(certs: Path, name: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if name:
        ctx.load_cert_chain(certs / f"{name}.crt", certs / f"{name}.key")
    return ctx


def ask(agent: AgentProcess, certs: Path, name: str | None, request: bytes = GET) -> int | None:
    """The status code, or None when the handshake or the connection was refused."""
    try:
        with socket.create_connection((agent.bind, agent.port), timeout=5) as raw, \
                context(certs, name).wrap_socket(raw) as sock:
            sock.sendall(request)
            head = sock.recv(4096)
    except (ssl.SSLError, ConnectionError):
        return None
    return int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else None


@pytest.mark.parametrize(("name", "refused_with"), [
    ("webhook", (None, 403)),     # serverAuth only: OpenSSL already refuses it as a client
    ("ca", (403,)),               # the CA certificate itself
    ("stranger", (None,)),        # the controller's name from another CA: the handshake fails
    (None, (401,)),               # no certificate
])
def test_only_the_controller_is_answered(agent: AgentProcess, certs: Path, name: str | None,
                                         refused_with: tuple[int | None, ...]) -> None:
    assert ask(agent, certs, "controller") == 200
    assert ask(agent, certs, name) in refused_with


def test_a_leaf_without_usages_is_refused(agent: AgentProcess, certs: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from customer_friendly.certs.pki import KeyPair
    from tests.unit.test_agent_server import without_eku

    ca = KeyPair.from_pem((certs / "ca.crt").read_bytes(), (certs / "ca.key").read_bytes())
    leaf = without_eku(ca, "customer-friendly-controller")
    (tmp_path / "noeku.crt").write_bytes(leaf.cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "noeku.key").write_bytes(leaf.key_pem())
    assert ask(agent, tmp_path, "noeku") in (None, 403)


@pytest.mark.parametrize("request_bytes", [
    b"POST /v1/release HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/release HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/release HTTP/1.1\r\nContent-Length: 40000\r\n\r\n" + b"[" * 40000,
], ids=["length abc", "length -1", "deeply nested JSON"])
def test_malformed_requests_get_400(agent: AgentProcess, certs: Path, request_bytes: bytes) -> None:
    assert ask(agent, certs, "controller", request_bytes) == 400


def test_idle_connections_are_closed(agent: AgentProcess, certs: Path) -> None:
    plain = socket.create_connection((agent.bind, agent.port), timeout=10)
    quiet = context(certs, "controller").wrap_socket(socket.create_connection((agent.bind, agent.port), timeout=10))
    started = time.monotonic()
    assert all(closed_by_peer(sock) for sock in (plain, quiet))
    assert time.monotonic() - started < 6


def test_the_controller_is_answered_while_300_idle_connections_are_open(agent: AgentProcess, certs: Path) -> None:
    idle = [socket.create_connection((agent.bind, agent.port), timeout=5) for _ in range(300)]
    try:
        client = AgentClient(certs / "controller.crt", certs / "controller.key", timeout=3)
        started = time.monotonic()
        for _ in range(10):
            assert client.status(agent.bind, agent.port, identity="pod/agent").state == "idle"
        assert time.monotonic() - started < 5
        threads = int(subprocess.run(["ps", "-o", "nlwp=", "-p", str(agent.proc.pid)],  # type: ignore[union-attr]  # started above
                                     capture_output=True, text=True).stdout.strip())
        assert threads < 20
    finally:
        for sock in idle:
            sock.close()


def test_no_key_material_is_on_the_code_volume(agent: AgentProcess) -> None:
    assert [p.name for p in agent.code.rglob("*")] == []
    assert "serving certificate made in memory at start" in agent.log.read_text()


def test_the_controller_refuses_an_agent_whose_certificate_changed(certs: Path, tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    first = AgentProcess(tmp_path / "code", tmp_path, certs / "ca.crt", {}).start()
    client = AgentClient(certs / "controller.crt", certs / "controller.key", timeout=3)
    try:
        client.status(first.bind, first.port, identity="pod-uid/containerd://1")
    finally:
        first.stop()
    impostor = AgentProcess(tmp_path / "code", tmp_path, certs / "ca.crt", {}, port=first.port).start()
    try:
        with pytest.raises(AgentError, match="not the agent first seen"):
            client.status(impostor.bind, impostor.port, identity="pod-uid/containerd://1")
        assert client.status(impostor.bind, impostor.port, identity="pod-uid/containerd://2").state == "idle"
    finally:
        impostor.stop()


def test_the_agent_command_documents_its_limits() -> None:
    text = subprocess.run([sys.executable, "-m", "customer_friendly.agent", "serve", "--help"], capture_output=True,
                           text=True).stdout
    for flag in ("--client-name", "--max-connections", "--idle-seconds", "--handshake-seconds"):
        assert flag in text
