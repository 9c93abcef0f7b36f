"""Calls to the in-pod agents over mutual TLS, and how the controller knows it reached one.

The controller proves who it is with its client certificate (the agents accept that identity
only). The other direction is harder, and this is what we chose and why (the full threat model
is in README, "How the controller knows it reached the agent"):

- An agent's serving key is made in memory at each start and never written (the code volume
  is the app's, and the controller may not read Secrets across namespaces, so no key issued by
  the installation can reach the pod without a new distribution channel).
- So there is no CA to verify an agent against. The controller pins each agent's certificate
  instead: the first answer from a pod's agent fixes its SHA-256 for the life of that agent
  container (pod uid + container id, from the API server: `agent_identity`). Any later
  connection for the same agent that presents another certificate is refused before a
  request is sent: an address reused by another pod, or taken over on the network, cannot
  pose as an agent the controller has already spoken to.
- What pinning does not cover is the first contact with a new agent container (trust on first
  use, as ssh). Closing that needs a proof the API server vouches for: a projected service
  account token with our audience in the agent, checked by TokenReview (see the document).

Nothing secret is sent either way: requests carry a release id and a source URI, and the
controller's key never leaves it, so an impostor learns little. The risk pinning bounds is
being lied to (a false "done" that moves a rollout on).
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from customer_friendly import contract as c
from customer_friendly.certs.identity import fingerprint
from customer_friendly.contract.agent_api import RELEASE_PATH, STATUS_PATH, AgentStatus, ReleaseRequest

logger = logging.getLogger(__name__)

MAX_RESPONSE = 1024 * 1024
"""An agent's status is a few KiB; more is not an agent."""


class AgentError(RuntimeError):
    """The agent could not be reached, was not the agent we pinned, or refused the call."""


def agent_identity(pod: dict[str, Any]) -> str | None:
    """Which agent process a pod runs now, as the API server reports it: the pod's uid and its
    agent container's id. A new agent key is expected only when this changes (a new pod, or
    the agent container restarted); None when the kubelet has not reported the container yet."""
    uid = (pod.get("metadata") or {}).get("uid")
    status = pod.get("status") or {}
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if container.get("name") == c.AGENT_CONTAINER and container.get("containerID") and uid:
            return f"{uid}/{container['containerID']}"
    return None


class Pins:
    """Agent identity -> the SHA-256 of the certificate it first presented. Bounded (oldest
    forgotten first) and thread-safe: the controller's workers share one."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._pins: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, identity: str, sha256: str) -> str | None:
        """None when `sha256` is (now) the pin for `identity`; else the pinned one."""
        with self._lock:
            pinned = self._pins.get(identity)
            if pinned is None:
                self._pins[identity] = sha256
                while len(self._pins) > self.capacity:
                    self._pins.popitem(last=False)
                logger.info("pinned the agent certificate of %s: sha256 %s", identity, sha256)
                return None
            self._pins.move_to_end(identity)
            return None if pinned == sha256 else pinned


class Contexts:
    """The client TLS context, made again only when the certificate or key file changes (a
    rotation): making one per call (loading the key) cost about 1 ms of CPU, a third of a status
    call, paid thousands of times in a large rollout. Thread-safe; a context is shared by calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: tuple[tuple[tuple[int, int, int], ...], ssl.SSLContext] | None = None

    def get(self, cert: Path, key: Path, make: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        stamp = tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in (cert.stat(), key.stat()))
        with self._lock:
            if self._made is None or self._made[0] != stamp:
                self._made = (stamp, make())
            return self._made[1]


class Connections:
    """Idle keep-alive connections to agents, by (address, port, agent identity): a batch's status
    polls reuse one connection per pod instead of a TLS handshake each (most of a call's CPU).
    A connection is reused only for the agent identity it was checked against when it was made.
    Bounded: beyond `capacity` the connection idle longest is closed. Thread-safe; a connection
    is out of the pool while a call uses it."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._idle: OrderedDict[tuple[str, int, str | None], http.client.HTTPSConnection] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: tuple[str, int, str | None]) -> http.client.HTTPSConnection | None:
        with self._lock:
            return self._idle.pop(key, None)

    def give(self, key: tuple[str, int, str | None], conn: http.client.HTTPSConnection) -> None:
        closing = []
        with self._lock:
            if key in self._idle:
                closing.append(self._idle.pop(key))
            self._idle[key] = conn
            while len(self._idle) > self.capacity:
                closing.append(self._idle.popitem(last=False)[1])
        for old in closing:
            old.close()


@dataclass(frozen=True)
class AgentClient:
    cert: Path
    key: Path
    timeout: float = 5.0
    pins: Pins = field(default_factory=Pins, compare=False)
    contexts: Contexts = field(default_factory=Contexts, compare=False)
    connections: Connections = field(default_factory=lambda: Connections(), compare=False)

    def _context(self) -> ssl.SSLContext:
        """A rotated certificate is picked up by the next call (Contexts compares the files' stamps)."""
        return self.contexts.get(self.cert, self.key, self._make_context)

    def _make_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # No CA can vouch for an agent's in-memory key (module docstring): the certificate is
        # checked against its pin in _call, right after the handshake and before any request.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        return context

    def _connect(self, ip: str, port: int, identity: str | None) -> http.client.HTTPSConnection:
        """A new connection, its certificate checked against the pin before any request is sent."""
        where = f"agent at {ip}:{port}"
        conn = http.client.HTTPSConnection(ip, port, context=self._context(), timeout=self.timeout)
        try:
            conn.connect()
            assert isinstance(conn.sock, ssl.SSLSocket)
            presented = fingerprint(conn.sock.getpeercert(binary_form=True) or b"")
        except BaseException:
            conn.close()
            raise
        if identity is not None and (pinned := self.pins.check(identity, presented)) is not None:
            conn.close()
            logger.warning("%s presented certificate sha256 %s, not the one pinned for %s (sha256 %s)",
                           where, presented, identity, pinned)
            raise AgentError(f"{where} is not the agent first seen for this pod: its certificate changed "
                             f"(sha256 {presented[:16]}…, pinned {pinned[:16]}…) while its container did not; "
                             "refusing to talk to it")
        return conn

    def _exchange(self, ip: str, port: int, method: str, path: str, data: bytes | None,
                  identity: str | None) -> tuple[http.client.HTTPResponse, bytes]:
        """One request on a kept connection to this agent (checked when it was made), or on a new
        one; a kept connection the agent closed meanwhile (its idle timeout) is replaced once.
        Asking again is safe: an agent asked for the release it already targets changes nothing."""
        key = (ip, port, identity)
        conn = self.connections.take(key)
        for attempt in ("kept", "new") if conn is not None else ("new",):
            if attempt == "new":
                conn = self._connect(ip, port, identity)
            assert conn is not None
            try:
                conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                raw = response.read(MAX_RESPONSE + 1)
            except (OSError, http.client.HTTPException):
                conn.close()
                if attempt == "new":
                    raise
                continue
            if response.will_close or not response.isclosed():
                conn.close()
            else:
                self.connections.give(key, conn)
            return response, raw
        raise AssertionError("unreachable: the new connection's attempt returns or raises")

    def _call(self, ip: str, port: int, method: str, path: str, body: dict[str, Any] | None = None,
              identity: str | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        where = f"agent at {ip}:{port}"
        try:
            response, raw = self._exchange(ip, port, method, path, data, identity)
        except (OSError, http.client.HTTPException) as err:
            raise AgentError(f"{where}: {err}") from err
        if len(raw) > MAX_RESPONSE:
            raise AgentError(f"{where}: answer larger than {MAX_RESPONSE} bytes")
        try:
            answer = json.loads(raw)
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict):
            if 200 <= response.status < 300:
                raise AgentError(f"{where}: answer {response.status} is not a JSON object")
            answer = {"error": f"HTTP {response.status} {response.reason}"}
        return response.status, answer

    def status(self, ip: str, port: int, identity: str | None = None) -> AgentStatus:
        """`identity` (agent_identity(pod)) pins the agent's certificate; without it nothing is pinned."""
        code, body = self._call(ip, port, "GET", STATUS_PATH, identity=identity)
        if code != 200:
            raise AgentError(f"agent at {ip}:{port} answered {code}: {body.get('error')}")
        return AgentStatus.from_json(body)

    def release(self, ip: str, port: int, request: ReleaseRequest, identity: str | None = None) -> int:
        """Ask for a release; 200 (already there), 202 (started) and 409 (busy) are all answers."""
        code, body = self._call(ip, port, "POST", RELEASE_PATH, request.to_json(), identity=identity)
        if code not in (200, 202, 409):
            raise AgentError(f"agent at {ip}:{port} refused release {request.release}: {code} {body.get('error')}")
        return code
