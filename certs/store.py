"""Where certificates live: a directory of PEM files, or Secrets in the install namespace.

Both stores read what exists (tolerating nothing or garbage, which then gets replaced) and
write a Plan. Keys are written with mode 0600 and never logged.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from customer_friendly.certs.pki import KeyPair, Plan

logger = logging.getLogger(__name__)

CA = "ca"


class Store(Protocol):
    def load(self, name: str) -> KeyPair | None: ...

    def save(self, result: Plan) -> None: ...


def _pair_or_none(cert_pem: bytes | None, key_pem: bytes | None, where: str) -> KeyPair | None:
    if not cert_pem or not key_pem:
        return None
    try:
        return KeyPair.from_pem(cert_pem, key_pem)
    except ValueError as err:
        logger.warning("ignoring unreadable certificate at %s (%s); it will be replaced", where, err)
        return None


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write atomically so a reader (the webhook's reload) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class DirectoryStore:
    """`<name>.crt` and `<name>.key` files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self, name: str) -> KeyPair | None:
        crt, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        if not crt.exists() or not key.exists():
            return None
        return _pair_or_none(crt.read_bytes(), key.read_bytes(), str(crt))

    def save(self, result: Plan) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        pairs = {CA: result.ca, **result.leaves}
        changed = {d.name for d in result.decisions if d.action != "keep"}
        for name, pair in pairs.items():
            if name not in changed:
                continue
            # Key first: a reader that sees the new certificate must find the matching key.
            _write_private(self.directory / f"{name}.key", pair.key_pem(), 0o600)
            _write_private(self.directory / f"{name}.crt", pair.cert_pem(), 0o644)


def secret_name(name: str) -> str:
    return "customer-friendly-ca" if name == CA else f"customer-friendly-{name}-tls"


class SecretStore:
    """One Secret per certificate in the install namespace.

    The CA key sits in its own Secret so that the webhook and the controller, which mount
    only their own `*-tls` Secret (tls.crt, tls.key, ca.crt), never see it.
    """

    def __init__(self, core_v1: Any, namespace: str) -> None:
        self.api = core_v1
        self.namespace = namespace

    def _read(self, name: str) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            secret = self.api.read_namespaced_secret(secret_name(name), self.namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return secret.data or {}

    def load(self, name: str) -> KeyPair | None:
        data = self._read(name)
        if data is None:
            return None
        cert, key = (base64.b64decode(data[k]) if k in data else None for k in ("tls.crt", "tls.key"))
        return _pair_or_none(cert, key, f"secret {secret_name(name)}")

    def save(self, result: Plan) -> None:
        from kubernetes.client.exceptions import ApiException

        changed = {d.name for d in result.decisions if d.action != "keep"}
        ca_pem = result.ca.cert_pem()
        for name, pair in {CA: result.ca, **result.leaves}.items():
            if name not in changed:
                continue
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": secret_name(name),
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/part-of": "customer-friendly-operator"},
                },
                "data": {
                    "tls.crt": base64.b64encode(pair.cert_pem()).decode(),
                    "tls.key": base64.b64encode(pair.key_pem()).decode(),
                    "ca.crt": base64.b64encode(ca_pem).decode(),
                },
            }
            try:
                self.api.replace_namespaced_secret(secret_name(name), self.namespace, body)
            except ApiException as err:
                if err.status != 404:
                    raise
                self.api.create_namespaced_secret(self.namespace, body)
