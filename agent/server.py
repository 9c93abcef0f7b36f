"""The agent's HTTPS API, with mutual TLS: only the controller's client certificate.

    GET  /healthz          for the container's own probes; the only route without a client cert
    GET  /v1/status        contract.agent_api.AgentStatus: releases, state, error, Puma's view
    POST /v1/release       contract.agent_api.ReleaseRequest (release, source and RestartOptions)
    POST /v1/rollback      contract.agent_api.RestartOptions

A started operation answers 202, a no-op 200, a second operation while one runs 409.

Who may call: a certificate that chains to the installation's CA (checked by TLS) *and* is the
controller's: its name (CFO_CLIENT_NAME, the controller's CN) with the clientAuth usage, not a
CA (certs.identity.client_refusal). Anything else signed by that CA (the webhook's serving
certificate, the CA itself) gets 403; no certificate gets 401. The answer says only that the
certificate was refused; the log says which one and why.

The serving key is made in memory at each start and never written anywhere (the code volume
is the app's too): see certs.identity.ephemeral_serving_pair and controller.agents for how the
controller pins it.

Why not ThreadingHTTPServer: it gives each TCP connection a thread for as long as the peer
keeps it open, so a few hundred idle connections (no handshake, no request) exhaust a sidecar
with 128 MiB. Here one thread multiplexes every connection through its TLS handshake and the
reading of a request, each step under a deadline; only a complete request goes to one of a
few worker threads. Idle connections cost a socket, not a thread, and are capped: beyond the
cap the oldest idle one is closed, so the controller still gets in. A framing error
(`Content-Length: abc`, `-1`, chunked bodies, oversized headers) is answered 400 at once.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import queue
import re
import selectors
import socket
import ssl
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from customer_friendly.agent.config import AgentConfig
from customer_friendly.agent.operation import Agent, Busy
from customer_friendly.agent.release import ReleaseError
from customer_friendly.certs.identity import client_refusal, describe, ephemeral_serving_pair, fingerprint
from customer_friendly.contract.agent_api import (
    HEALTH_PATH,
    RELEASE_PATH,
    ROLLBACK_PATH,
    STATUS_PATH,
    ReleaseRequest,
    RestartOptions,
)

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024
"""Request line and headers: the controller sends a few hundred bytes."""
STALE_KEY_DIR = ".cfo-agent-tls"
"""Where agents before 0.1.1 wrote their key, on the code volume; removed at start."""


def _load_in_memory(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """load_cert_chain only reads paths: hand it an anonymous in-memory file (memfd), never a
    file on a volume. Where memfd is missing, a private temporary file unlinked at once."""
    if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
        fd = os.memfd_create("cfo-agent-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, cert_pem + key_pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="cfo-agent-tls-") as private:
        path = Path(private) / "pair.pem"
        path.touch(mode=0o600)
        path.write_bytes(cert_pem + key_pem)
        context.load_cert_chain(path)


def remove_stale_key(code_path: Path) -> bool:
    """Delete the key an older agent left on the code volume; never follows a link planted there."""
    try:
        fd = os.open(code_path / STALE_KEY_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        for name in ("tls.key", "tls.crt", ".tls.key.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(code_path / STALE_KEY_DIR)
    return True


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def tls_context(config: AgentConfig) -> tuple[ssl.SSLContext, str | None]:
    """The server context and, for a key made at start, its certificate's SHA-256 (for the log)."""
    if not config.client_ca_pem:
        raise SystemExit("cfo-agent: no client CA (CFO_CLIENT_CA or CFO_CLIENT_CA_FILE): refusing to serve an "
                         "unauthenticated API")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    made = None
    if config.tls_cert is not None and config.tls_key is not None:
        for path in (config.tls_key, config.tls_cert):
            if _inside(path, config.code_path):
                raise SystemExit(f"cfo-agent: {path} is on the code volume ({config.code_path}), which the app "
                                 "container mounts too: keep the agent's key elsewhere (or let it make one in "
                                 "memory: unset CFO_TLS_CERT and CFO_TLS_KEY)")
        context.load_cert_chain(config.tls_cert, config.tls_key)
    else:
        pair = ephemeral_serving_pair()
        _load_in_memory(context, pair.cert_pem(), pair.key_pem())
        made = fingerprint(pair.cert.public_bytes(Encoding.DER))
    context.load_verify_locations(cadata=config.client_ca_pem)
    # OPTIONAL, so that the kubelet's probe of /healthz (no client cert) can connect; every
    # other route checks the verified certificate's identity. A certificate from another CA
    # still fails the handshake.
    context.verify_mode = ssl.CERT_OPTIONAL
    return context, made


class BadFrame(ValueError):
    """A request that cannot be framed; answered 400 (or 413) and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_LENGTH = re.compile(rb"[0-9]{1,12}")


def frame(buffer: bytes | bytearray, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> int | None:
    """The length of the first complete request in `buffer`, None while it is incomplete.

    Only as much HTTP as framing needs: the end of the headers and a Content-Length that is
    a plain decimal number. BadFrame for anything else, so that no request is ever read to EOF
    or by a guessed length.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > max_head:
            raise BadFrame(431, f"request line and headers larger than {max_head} bytes")
        return None
    if end > max_head:
        raise BadFrame(431, f"request line and headers larger than {max_head} bytes")
    length = _body_length(bytes(buffer[:end]))
    if length > max_body:
        raise BadFrame(413, f"body larger than {max_body} bytes")
    total = end + 4 + length
    return total if len(buffer) >= total else None


def _body_length(head: bytes) -> int:
    """The body length the head (request line and headers, without the blank line) declares:
    0 without a Content-Length; BadFrame for a malformed line, chunking, or lengths that differ."""
    lengths = set()
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadFrame(400, "malformed header line")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            raise BadFrame(400, "Transfer-Encoding is not accepted: send the body with a Content-Length")
        if name == b"content-length":
            lengths.add(_content_length(value))
    if len(lengths) > 1:
        raise BadFrame(400, "conflicting Content-Length headers")
    return lengths.pop() if lengths else 0


def _content_length(value: bytes) -> int:
    """One Content-Length value: plain decimal digits only (no sign, no hex, no list), so no guessing."""
    value = value.strip()
    if not _LENGTH.fullmatch(value):
        raise BadFrame(400, "Content-Length must be a non-negative decimal number")
    return int(value)


class _SocketWriter(io.BufferedIOBase):
    """The handler's wfile: every write goes straight to the socket (socketserver has one too,
    but private)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class Handler(BaseHTTPRequestHandler):
    """One complete request, already framed by the server's loop, answered on its connection."""

    protocol_version = "HTTP/1.1"
    server_version = "cfo-agent"

    def __init__(self, api: AgentServer, conn: _Conn, request: bytes) -> None:
        # Not BaseRequestHandler.__init__: the bytes are already read, the socket stays open.
        self.api, self.conn = api, conn
        self.connection = self.request = conn.sock
        self.client_address = conn.addr
        self.rfile = io.BytesIO(request)
        self.wfile = _SocketWriter(conn.sock)
        self.close_connection = True
        self.handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a bad request line, an unknown method), as JSON too."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # no request line parsed: answer with headers anyway
            self.request_version = "HTTP/1.1"
        self._send(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _authenticated(self) -> bool:
        peer = self.conn.peer
        if not peer:
            logger.info("refused a request for %s from %s: no client certificate", self.path, self.client_address[0])
            self._send(401, {"error": "a client certificate is required"})
            return False
        if self.conn.refusal is None:
            self.conn.refusal = client_refusal(peer, self.api.client_name) or ""
            if self.conn.refusal:
                logger.warning("refused client %s from %s: %s", describe(peer), self.client_address[0],
                               self.conn.refusal)
        if self.conn.refusal:
            self._send(403, {"error": "this client certificate is not accepted by the agent"})
            return False
        return True

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)  # framed already: a plain number
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, RecursionError):  # RecursionError: deeply nested arrays or objects
            self.close_connection = True
            self._send(400, {"error": "body must be JSON"})
            return None
        if not isinstance(body, dict):
            self._send(400, {"error": "body must be a JSON object"})
            return None
        return body

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._send(200, {"status": "ok"})
        elif self.path == STATUS_PATH:
            if self._authenticated():
                self._send(200, self.api.agent.status())
        else:
            self._send(404, {"error": "no such route"})

    def do_POST(self) -> None:
        if self.path not in (RELEASE_PATH, ROLLBACK_PATH):
            self._send(404, {"error": "no such route"})
            return
        if not self._authenticated() or (body := self._body()) is None:
            return
        try:
            if self.path == RELEASE_PATH:
                started = self.api.agent.start(ReleaseRequest.from_json(body))
                self._send(202 if started else 200, self.api.agent.status())
            else:
                self.api.agent.rollback(RestartOptions.from_json(body))
                self._send(202, self.api.agent.status())
        except Busy as err:
            self._send(409, {"error": str(err)})
        except (ValueError, ReleaseError) as err:
            self._send(400, {"error": str(err)})


HANDSHAKE, IDLE, READING, BUSY = "handshake", "idle", "reading", "busy"


@dataclass(eq=False)
class _Conn:
    sock: ssl.SSLSocket
    addr: tuple[Any, ...]
    state: str
    deadline: float
    opened: float
    buffer: bytearray = field(default_factory=bytearray)
    peer: bytes | None = None
    refusal: str | None = None
    """None until checked; "" for the controller; else why its certificate was refused."""


@dataclass(frozen=True)
class ServerLimits:
    """The API's bounds; their defaults and names are AgentConfig's (one place, CFO_AGENT_*)."""

    max_connections: int
    workers: int
    handshake_seconds: float
    idle_seconds: float
    request_seconds: float
    write_seconds: float = 10.0

    @classmethod
    def of(cls, config: AgentConfig) -> ServerLimits:
        return cls(config.max_connections, config.workers, config.handshake_seconds, config.idle_seconds,
                   config.request_seconds)


class AgentServer:
    """The API's event loop (one thread) and its workers: see the module docstring."""

    def __init__(self, agent: Agent, context: ssl.SSLContext, address: tuple[str, int], limits: ServerLimits,
                 client_name: str) -> None:
        self.agent, self.context, self.limits, self.client_name = agent, context, limits, client_name
        self.socket = socket.create_server(address, backlog=128)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._returned: queue.SimpleQueue[tuple[_Conn, bool]] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="cfo-agent-api")
        self._conns: set[_Conn] = set()
        self._stop = threading.Event()
        self._stopped = threading.Event()

    # --- the loop ---------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 1.0) -> None:
        self._stopped.clear()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                waiting = [c.deadline for c in self._conns if c.state != BUSY]
                timeout = min([poll_interval, *(d - now for d in waiting)])
                for key, _ in self._selector.select(max(0.0, timeout)):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._drain_returned()
                    else:
                        self._advance(key.data)
                self._expire(time.monotonic())
        finally:
            for conn in list(self._conns):
                self._close(conn)
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake()
        self._stopped.wait(10)

    def server_close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for sock in (self.socket, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe already wakes the loop
            self._wake_w.send(b"x")

    def _accept(self) -> None:
        while True:
            try:
                raw, addr = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as err:  # out of descriptors: the oldest idle ones go below, later
                logger.warning("accept failed: %s", err)
                return
            if len(self._conns) >= self.limits.max_connections and not self._evict_oldest_idle():
                raw.close()
                continue
            raw.setblocking(False)
            now = time.monotonic()
            try:
                sock = self.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            except (OSError, ValueError):
                raw.close()
                continue
            conn = _Conn(sock, addr, HANDSHAKE, now + self.limits.handshake_seconds, now)
            self._conns.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _evict_oldest_idle(self) -> bool:
        idle = [c for c in self._conns if c.state != BUSY]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.opened)
        logger.info("%d connections open: closing the oldest idle one, from %s", len(self._conns), oldest.addr[0])
        self._close(oldest)
        return True

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns if c.state != BUSY and c.deadline <= now]:
            logger.debug("closing a connection from %s: %s for too long", conn.addr[0], conn.state)
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _advance(self, conn: _Conn) -> None:
        """Move one connection on as far as it goes without blocking."""
        now = time.monotonic()
        if conn.state == HANDSHAKE:
            try:
                conn.sock.do_handshake()
            except ssl.SSLWantReadError:
                self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
                return
            except ssl.SSLWantWriteError:
                self._selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
                return
            except (ssl.SSLError, OSError, ValueError) as err:
                logger.debug("handshake with %s failed: %s", conn.addr[0], err)
                self._close(conn)
                return
            conn.peer = conn.sock.getpeercert(binary_form=True)
            conn.state, conn.deadline = IDLE, now + self.limits.idle_seconds
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
        while len(conn.buffer) <= MAX_HEAD + MAX_BODY:
            try:
                chunk = conn.sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (ssl.SSLError, OSError, ValueError):
                self._close(conn)
                return
            if not chunk:
                self._close(conn)
                return
            if conn.state == IDLE:
                conn.state, conn.deadline = READING, now + self.limits.request_seconds
            conn.buffer += chunk
        self._dispatch(conn)

    def _dispatch(self, conn: _Conn) -> None:
        """Hand a complete request (or a framing error) to a worker; keep waiting otherwise."""
        try:
            length = frame(conn.buffer)
        except BadFrame as err:
            self._hand_over(conn, self._refuse_frame, err)
            return
        if length is None:
            return
        request = bytes(conn.buffer[:length])
        del conn.buffer[:length]
        self._hand_over(conn, self._answer, request)

    def _hand_over(self, conn: _Conn, work: Any, arg: Any) -> None:
        conn.state = BUSY
        self._selector.unregister(conn.sock)
        self._pool.submit(work, conn, arg)

    def _drain_returned(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                conn, keep = self._returned.get_nowait()
            except queue.Empty:
                return
            if not keep or self._stop.is_set():
                self._close(conn)
                continue
            conn.sock.setblocking(False)
            conn.state = READING if conn.buffer else IDLE
            conn.deadline = time.monotonic() + (self.limits.request_seconds if conn.buffer
                                                else self.limits.idle_seconds)
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
            self._advance(conn)  # TLS may hold decrypted bytes that select() cannot see

    # --- the workers ----------------------------------------------------------------------

    def _answer(self, conn: _Conn, request: bytes) -> None:
        keep = False
        try:
            conn.sock.settimeout(self.limits.write_seconds)
            keep = not Handler(self, conn, request).close_connection
        except Exception:  # a worker must always hand its connection back
            logger.exception("answering %s failed", conn.addr[0])
        self._returned.put((conn, keep))
        self._wake()

    def _refuse_frame(self, conn: _Conn, err: BadFrame) -> None:
        with contextlib.suppress(Exception):
            conn.sock.settimeout(self.limits.write_seconds)
            body = json.dumps({"error": str(err)}).encode()
            head = (f"HTTP/1.1 {err.status} {HTTPStatus(err.status).phrase}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            conn.sock.sendall(head + body)
        self._returned.put((conn, False))
        self._wake()


def make_server(agent: Agent, config: AgentConfig) -> AgentServer:
    if remove_stale_key(config.code_path):
        logger.warning("removed the TLS key an older agent left on the code volume (%s/%s)", config.code_path,
                       STALE_KEY_DIR)
    context, made = tls_context(config)
    if made:
        logger.info("serving certificate made in memory at start: sha256 %s", made)
    return AgentServer(agent, context, (config.bind, config.port), ServerLimits.of(config), config.client_name)
