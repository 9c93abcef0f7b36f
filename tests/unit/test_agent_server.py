"""The agent's API server: who it accepts (issue 10 item 11), how it frames requests and
survives idle or malformed connections (item 13), and where its key is (item 14).

The server runs in-process on loopback with real mutual TLS; `tests/integration/test_agent_api.py`
does the same against `cfo-agent serve` as a process.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from customer_friendly.agent.config import AgentConfig
from customer_friendly.agent.server import (
    STALE_KEY_DIR,
    AgentServer,
    BadFrame,
    ServerLimits,
    frame,
    remove_stale_key,
    tls_context,
)
from customer_friendly.certs.cli import leaf_specs
from customer_friendly.certs.identity import client_refusal
from customer_friendly.certs.names import CONTROLLER_CN
from customer_friendly.certs.pki import KeyPair, LeafSpec, Usage, issue, new_key, plan
from customer_friendly.certs.pki import Validity as CertValidity

NOW = dt.datetime.now(dt.UTC)


# --- identities -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Installation:
    ca: KeyPair
    webhook: KeyPair
    controller: KeyPair


@pytest.fixture(scope="module")
def installation() -> Installation:
    result = plan(None, {}, leaf_specs("customer-friendly-webhook", "customer-friendly-system", [], []),
                  CertValidity(), NOW)
    return Installation(result.ca, result.leaves["webhook"], result.leaves["controller"])


def without_eku(ca: KeyPair, common_name: str) -> KeyPair:
    """A leaf signed by the CA that says nothing about what it is for."""
    key = new_key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(minutes=5)).not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca.key, hashes.SHA256()))
    return KeyPair(cert, key)


def der(pair: KeyPair) -> bytes:
    return pair.cert.public_bytes(Encoding.DER)


IDENTITIES = {
    # name: (how to make it from the installation, the reason it is refused or None)
    "the controller's client certificate": (lambda i: i.controller, None),
    "the webhook's serving certificate (serverAuth only)": (lambda i: i.webhook, "no clientAuth extended key usage"),
    "the CA certificate itself": (lambda i: i.ca, "a CA certificate, not a client's"),
    "a leaf without extended key usage": (lambda i: without_eku(i.ca, CONTROLLER_CN),
                                          "no extended key usage (clientAuth is required)"),
    "a client certificate with another name": (
        lambda i: issue(i.ca, LeafSpec("someone-else", Usage.CLIENT), 1, NOW), f"not named {CONTROLLER_CN}"),
    "a client certificate naming the controller in its DNS names": (
        lambda i: issue(i.ca, LeafSpec("x", Usage.CLIENT, (CONTROLLER_CN,)), 1, NOW), None),
    "a server-and-client certificate with the controller's name": (
        lambda i: issue(i.ca, LeafSpec(CONTROLLER_CN, Usage.BOTH), 1, NOW), None),
}


@pytest.mark.parametrize("name", IDENTITIES)
def test_only_the_controllers_client_identity_is_accepted(installation: Installation, name: str) -> None:
    make, reason = IDENTITIES[name]
    assert client_refusal(der(make(installation)), CONTROLLER_CN) == reason


def test_an_unreadable_certificate_is_refused() -> None:
    assert client_refusal(b"\x30\x03garbage", CONTROLLER_CN) == "unreadable certificate"


# --- framing ----------------------------------------------------------------------------------

GET = b"GET /v1/status HTTP/1.1\r\nHost: a\r\n\r\n"


def post(length: bytes, body: bytes = b"") -> bytes:
    return b"POST /v1/release HTTP/1.1\r\nHost: a\r\nContent-Length: " + length + b"\r\n\r\n" + body


FRAMES: list[tuple[str, bytes, int | tuple[int, str] | None]] = [
    ("a GET without a body", GET, len(GET)),
    ("a GET with more pipelined behind it", GET + GET[:10], len(GET)),
    ("headers not finished yet", GET[:-2], None),
    ("a body not complete yet", post(b"10", b"{}"), None),
    ("a complete body", post(b"2", b"{}"), len(post(b"2", b"{}"))),
    ("Content-Length: abc", post(b"abc"), (400, "Content-Length must be")),
    ("Content-Length: -1", post(b"-1"), (400, "Content-Length must be")),
    ("Content-Length: +5", post(b"+5"), (400, "Content-Length must be")),
    ("Content-Length: 1e3", post(b"1e3"), (400, "Content-Length must be")),
    ("an empty Content-Length", post(b""), (400, "Content-Length must be")),
    ("a huge Content-Length", post(b"99999999999999999999"), (400, "Content-Length must be")),
    ("a body over the limit", post(b"65537"), (413, "body larger than")),
    ("two different Content-Lengths", b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     (400, "conflicting")),
    ("chunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", (400, "Transfer-Encoding")),
    ("a header line without a colon", b"GET / HTTP/1.1\r\nnonsense\r\n\r\n", (400, "malformed header")),
    ("endless headers", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 4000, (431, "headers larger")),
]


@pytest.mark.parametrize(("data", "expected"), [f[1:] for f in FRAMES], ids=[f[0] for f in FRAMES])
def test_requests_are_framed_or_refused_with_a_status(data: bytes, expected: Any) -> None:
    if isinstance(expected, tuple):
        with pytest.raises(BadFrame, match=expected[1]) as err:
            frame(data)
        assert err.value.status == expected[0]
    else:
        assert frame(data) == expected


# --- the key stays off the code volume (item 14) ----------------------------------------------

def config_for(tmp_path: Path, ca_pem: str, **changes: Any) -> AgentConfig:
    env = {"CFO_CODE_PATH": str(tmp_path / "code"), "CFO_CLIENT_CA": ca_pem, "CFO_AGENT_BIND": "127.0.0.1",
           "CFO_AGENT_PORT": "0"}
    return replace(AgentConfig.from_env(None, env), **changes)


def test_the_serving_key_is_made_in_memory_and_nothing_is_written(installation: Installation,
                                                                   tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    context, sha256 = tls_context(config_for(tmp_path, installation.ca.cert_pem().decode()))
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2 and len(sha256 or "") == 64
    assert list(code.iterdir()) == []


def test_a_key_given_on_the_code_volume_is_refused(installation: Installation, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "k.pem").write_bytes(installation.webhook.key_pem())
    (code / "c.pem").write_bytes(installation.webhook.cert_pem())
    config = config_for(tmp_path, installation.ca.cert_pem().decode(), tls_cert=code / "c.pem",
                        tls_key=code / "k.pem")
    with pytest.raises(SystemExit, match="on the code volume"):
        tls_context(config)


def test_the_key_an_older_agent_left_on_the_code_volume_is_removed(tmp_path: Path) -> None:
    stale = tmp_path / STALE_KEY_DIR
    stale.mkdir()
    (stale / "tls.key").write_text("secret")
    (stale / "tls.crt").write_text("cert")
    assert remove_stale_key(tmp_path)
    assert not stale.exists()


def test_removing_a_stale_key_never_follows_a_link_planted_by_the_app(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tls.key").write_text("not ours")
    code = tmp_path / "code"
    code.mkdir()
    (code / STALE_KEY_DIR).symlink_to(elsewhere)
    assert not remove_stale_key(code)
    assert (elsewhere / "tls.key").read_text() == "not ours"


# --- the server over real mutual TLS ----------------------------------------------------------

class FakeAgent:
    def __init__(self) -> None:
        self.asked: list[Any] = []

    def status(self) -> dict[str, Any]:
        return {"state": "idle", "release": "v1"}

    def start(self, request: Any) -> bool:
        self.asked.append(request)
        return True

    def rollback(self, options: dict[str, Any]) -> None:
        self.asked.append(options)


@dataclass
class Running:
    server: AgentServer
    agent: FakeAgent
    certs: Path

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def context(self, name: str | None = "controller") -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if name:
            context.load_cert_chain(self.certs / f"{name}.crt", self.certs / f"{name}.key")
        return context

    def connect(self, name: str | None = "controller") -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return self.context(name).wrap_socket(raw)

    def exchange(self, data: bytes, name: str | None = "controller") -> tuple[int, dict[str, Any], bytes]:
        with self.connect(name) as sock:
            sock.sendall(data)
            return read_response(sock)


def read_response(sock: ssl.SSLSocket) -> tuple[int, dict[str, Any], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body[:length]), head


@pytest.fixture
def running(installation: Installation, tmp_path: Path) -> Iterator[Running]:
    certs = tmp_path / "certs"
    certs.mkdir()
    for name, pair in (("ca", installation.ca), ("webhook", installation.webhook),
                       ("controller", installation.controller)):
        (certs / f"{name}.crt").write_bytes(pair.cert_pem())
        (certs / f"{name}.key").write_bytes(pair.key_pem())
    (tmp_path / "code").mkdir()
    context, _ = tls_context(config_for(tmp_path, installation.ca.cert_pem().decode()))
    agent = FakeAgent()
    server = AgentServer(agent, context, ("127.0.0.1", 0),  # type: ignore[arg-type]  # a stand-in Agent
                         ServerLimits(max_connections=400, workers=2, handshake_seconds=1, idle_seconds=1,
                                      request_seconds=1), CONTROLLER_CN)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Running(server, agent, certs)
    server.shutdown()
    server.server_close()


def test_the_controller_is_answered_and_keeps_its_connection(running: Running) -> None:
    with running.connect() as sock:
        for _ in range(3):
            sock.sendall(GET)
            code, body, _ = read_response(sock)
            assert (code, body["release"]) == (200, "v1")


def test_a_certificate_of_the_ca_that_is_not_the_controllers_gets_403(running: Running) -> None:
    code, body, _ = running.exchange(GET, "ca")
    assert code == 403 and body == {"error": "this client certificate is not accepted by the agent"}


def test_no_client_certificate_gets_401_but_the_probe_is_answered(running: Running) -> None:
    assert running.exchange(GET, None)[:2] == (401, {"error": "a client certificate is required"})
    assert running.exchange(b"GET /healthz HTTP/1.1\r\n\r\n", None)[:2] == (200, {"status": "ok"})


@pytest.mark.parametrize("request_bytes", [
    post(b"abc"), post(b"-1"), post(b"3", b"{\"x"),
    post(str(50_000).encode(), b"[" * 50_000),
    b"POST /v1/release HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"BREW /v1/release HTTP/1.1\r\n\r\n",
    b"\x16\x03garbage that is no request line\r\n\r\n",
], ids=["length abc", "length -1", "truncated JSON", "deeply nested JSON", "chunked", "unknown method",
        "garbage request line"])
def test_malformed_requests_get_a_json_error_and_hold_nothing(running: Running, request_bytes: bytes) -> None:
    code, body, _ = running.exchange(request_bytes)
    assert 400 <= code <= 501 and code not in (401, 403) and isinstance(body.get("error"), str), (code, body)
    assert running.agent.asked == []
    assert running.exchange(GET)[0] == 200  # and nothing is stuck behind it


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(10) == b""
    except (ConnectionError, ssl.SSLError):
        return True
    finally:
        sock.close()


def test_idle_and_half_sent_connections_are_closed(running: Running) -> None:
    plain = socket.create_connection(("127.0.0.1", running.port), timeout=5)  # no handshake at all
    quiet = running.connect()  # a handshake, then nothing
    slow = running.connect()
    slow.sendall(GET[:10])  # a request never finished
    started = time.monotonic()
    assert all(closed_by_peer(sock) for sock in (plain, quiet, slow))
    assert time.monotonic() - started < 4  # the limits are 1s each


def test_the_controller_is_answered_while_300_idle_connections_are_open(running: Running) -> None:
    idle = [socket.create_connection(("127.0.0.1", running.port), timeout=5) for _ in range(300)]
    try:
        started = time.monotonic()
        for _ in range(5):
            assert running.exchange(GET)[0] == 200
        assert time.monotonic() - started < 3
        assert threading.active_count() < 20  # idle connections hold no thread
    finally:
        for sock in idle:
            sock.close()


def test_beyond_the_cap_the_oldest_idle_connection_makes_room(installation: Installation, tmp_path: Path,
                                                              running: Running) -> None:
    running.server.limits = replace(running.server.limits, max_connections=20, idle_seconds=30,
                                    handshake_seconds=30)
    idle = [socket.create_connection(("127.0.0.1", running.port), timeout=5) for _ in range(20)]
    time.sleep(0.2)
    try:
        assert running.exchange(GET)[0] == 200
        assert idle[0].recv(10) == b""  # the oldest made room
    finally:
        for sock in idle:
            sock.close()
