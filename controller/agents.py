"""Calls to the in-pod agents over mutual TLS: the controller's client certificate proves who
it is. The agents' serving certificates are per-pod and self-signed, so they are not verified
(see README: the pod IP comes from the API server, and the agent acts only on the client
certificate).
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.plan import AgentView

logger = logging.getLogger(__name__)


class AgentError(RuntimeError):
    """The agent could not be reached or refused the call."""


@dataclass(frozen=True)
class AgentClient:
    cert: Path
    key: Path
    timeout: float = 5.0

    def _context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(self.cert, self.key)
        return context

    def _call(self, ip: str, port: int, method: str, path: str, body: dict[str, Any] | None = None
              ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"https://{ip}:{port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self._context(), timeout=self.timeout) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            try:
                return err.code, json.load(err)
            except (ValueError, OSError):
                return err.code, {"error": str(err)}
        except (OSError, ValueError) as err:
            raise AgentError(f"agent at {ip}:{port}: {err}") from err

    def status(self, ip: str, port: int) -> AgentView:
        code, body = self._call(ip, port, "GET", "/v1/status")
        if code != 200:
            raise AgentError(f"agent at {ip}:{port} answered {code}: {body.get('error')}")
        return AgentView(body.get("state", "idle"), body.get("target"), body.get("release"), body.get("error"))

    def release(self, ip: str, port: int, release: str, source: str, restart: str,
                options: dict[str, Any] | None = None) -> int:
        """Ask for a release; 200 (already there), 202 (started) and 409 (busy) are all answers."""
        code, body = self._call(ip, port, "POST", "/v1/release",
                                {"release": release, "source": source, "restart": restart, **(options or {})})
        if code not in (200, 202, 409):
            raise AgentError(f"agent at {ip}:{port} refused release {release}: {code} {body.get('error')}")
        return code
