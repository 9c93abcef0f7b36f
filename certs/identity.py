"""Who is on the other end of a TLS connection: pure checks of a peer's DER certificate.

The agent uses `client_refusal` to accept only the controller's client certificate, not any
certificate its CA happens to have signed (the webhook's serving certificate, the CA itself,
a leaf without usages). The controller uses `fingerprint` to pin each agent's serving key.
Nothing here reads files or sockets, so the rules are table-tested with generated certificates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import socket
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from customer_friendly.certs.pki import KeyPair, LeafSpec, Usage, create_ca, issue


def fingerprint(der: bytes) -> str:
    """The SHA-256 of a certificate's DER, in lower-case hex (what `openssl x509 -fingerprint` shows)."""
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class Peer:
    """What we log of a certificate: enough to find it, nothing secret."""

    subject: str
    issuer: str
    serial: str
    sha256: str

    def __str__(self) -> str:
        return f"subject {self.subject!r} issuer {self.issuer!r} serial {self.serial} sha256 {self.sha256[:16]}"


def describe(der: bytes) -> Peer:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return Peer("(unreadable)", "(unreadable)", "-", fingerprint(der))
    return Peer(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), format(cert.serial_number, "x"),
                fingerprint(der))


def client_refusal(der: bytes, expected_name: str) -> str | None:
    """Why a client certificate (already verified against the installation's CA by TLS) is not the
    controller's, or None when it is.

    The controller's identity is its name (the common name, or a DNS name among the subject
    alternative names) together with the clientAuth extended key usage, on a certificate that is
    not a CA. The reason is for the log; the client is only told that it was refused.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return "unreadable certificate"
    with contextlib.suppress(x509.ExtensionNotFound):
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "a CA certificate, not a client's"
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "no extended key usage (clientAuth is required)"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return "no clientAuth extended key usage"
    names = {attr.value for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    with contextlib.suppress(x509.ExtensionNotFound):
        names |= set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                     .get_values_for_type(x509.DNSName))
    if expected_name not in names:
        return f"not named {expected_name}"
    return None


def ephemeral_serving_pair(now: dt.datetime | None = None, days: int = 3650) -> KeyPair:
    """The agent's serving certificate and key, made in memory at each start and never written.

    Self-signed by a one-off CA whose key is dropped at once: nobody can issue another
    certificate under it. The controller does not trust it by its issuer but pins its key per
    pod (see controller.agents).
    """
    now = now or dt.datetime.now(dt.UTC)
    name = socket.gethostname() or "cfo-agent"
    throwaway = create_ca(f"cfo-agent {name}", days, now)
    return issue(throwaway, LeafSpec(name, Usage.SERVER, ("localhost",), ("127.0.0.1",)), days, now)
