"""The agent's HTTPS API, with mutual TLS: only clients signed by the installation's CA.

    GET  /healthz          for the container's own probes; the only route without a client cert
    GET  /v1/status        current, previous and target release, state, error, Puma's view
    POST /v1/release       {"release", "source", "restart": "phased"|"hot", "allowHot", "deadlineSeconds"}
    POST /v1/rollback      {"restart", "allowHot"}

A started operation answers 202, a no-op 200, a second operation while one runs 409.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import socket
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.operation import Agent, Busy, Request
from agent.release import ReleaseError
from certs.pki import LeafSpec, Usage, create_ca, issue
from contract import RESTART_ACCEPTS, SIGNAL_NAMES, SOURCE_SCHEMES, is_release_id, is_restart_mode

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway serving certificate, when none is mounted; clients authenticate, not we."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca = create_ca("cfo-agent", 3650, now)
    pair = issue(ca, LeafSpec(socket.gethostname() or "cfo-agent", Usage.SERVER, ("localhost",), ("127.0.0.1",)),
                 3650, now)
    cert, key = directory / "tls.crt", directory / "tls.key"
    key.touch(mode=0o600)
    key.write_bytes(pair.key_pem())
    cert.write_bytes(pair.cert_pem())
    return cert, key


def tls_context(config: AgentConfig) -> ssl.SSLContext:
    if not config.client_ca_pem:
        raise SystemExit("cfo-agent: no client CA (CFO_CLIENT_CA or CFO_CLIENT_CA_FILE): refusing to serve an "
                         "unauthenticated API")
    cert, key = config.tls_cert, config.tls_key
    if cert is None or key is None:
        cert, key = _self_signed(config.code_path / ".cfo-agent-tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cadata=config.client_ca_pem)
    # OPTIONAL, so that the kubelet's probe of /healthz (no client cert) can connect; every
    # other route checks for a verified certificate. A certificate from another CA still
    # fails the handshake.
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def parse_options(body: dict[str, Any]) -> dict[str, Any]:
    """The restart settings shared by /v1/release and /v1/rollback; ValueError names the field."""
    restart = body.get("restart", "phased")
    if not isinstance(restart, str) or not is_restart_mode(restart):
        raise ValueError(f"restart must be {RESTART_ACCEPTS}")
    deadline = body.get("deadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int | float) or not 1 <= deadline <= 3600):
        raise ValueError("deadlineSeconds must be a number from 1 to 3600")
    process = body.get("process")
    if process is not None:
        try:
            re.compile(process)
        except (re.error, TypeError) as err:
            raise ValueError(f"process must be a regular expression for the process title ({err})") from err
    quiet = body.get("quietSignal", "TSTP")
    if quiet not in SIGNAL_NAMES:
        raise ValueError("quietSignal must be one of " + ", ".join(SIGNAL_NAMES))
    drain = body.get("drainSeconds", 30)
    if not isinstance(drain, int | float) or not 0 <= drain <= 3600:
        raise ValueError("drainSeconds must be a number from 0 to 3600")
    return {"restart": restart, "allow_hot": bool(body.get("allowHot", False)), "deadline_seconds": deadline,
            "process": process, "quiet_signal": quiet, "drain_seconds": drain}


def parse_release_request(body: dict[str, Any]) -> Request:
    """Validate a /v1/release body; ValueError names the field and what it accepts."""
    release, source = body.get("release"), body.get("source")
    if not isinstance(release, str) or not is_release_id(release):
        raise ValueError("release must be a release id matching ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    if not isinstance(source, str) or not source.startswith(SOURCE_SCHEMES) or "{release}" not in source:
        raise ValueError("source must be an s3://, https:// or file:// URI template containing {release}")
    return Request(release, source, **parse_options(body))


class Handler(BaseHTTPRequestHandler):
    agent: Agent  # set on the subclass made by make_server
    protocol_version = "HTTP/1.1"
    server_version = "cfo-agent"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authenticated(self) -> bool:
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        if not peer:
            self._send(401, {"error": "a client certificate signed by the installation's CA is required"})
            return False
        return True

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, {"error": f"body larger than {MAX_BODY} bytes"})
            return None
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._send(400, {"error": "body must be JSON"})
            return None
        if not isinstance(body, dict):
            self._send(400, {"error": "body must be a JSON object"})
            return None
        return body

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/status":
            if self._authenticated():
                self._send(200, self.agent.status())
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path not in ("/v1/release", "/v1/rollback"):
            self._send(404, {"error": f"no route {self.path}"})
            return
        if not self._authenticated() or (body := self._body()) is None:
            return
        try:
            if self.path == "/v1/release":
                started = self.agent.start(parse_release_request(body))
                self._send(202 if started else 200, self.agent.status())
            else:
                self.agent.rollback(parse_options(body))
                self._send(202, self.agent.status())
        except Busy as err:
            self._send(409, {"error": str(err)})
        except (ValueError, ReleaseError) as err:
            self._send(400, {"error": str(err)})


def make_server(agent: Agent, config: AgentConfig) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"agent": agent})
    server = ThreadingHTTPServer((config.bind, config.port), handler)
    server.daemon_threads = True
    # Handshake in the handler's thread, so a slow client cannot stall accept().
    server.socket = tls_context(config).wrap_socket(server.socket, server_side=True,
                                                    do_handshake_on_connect=False)
    return server
