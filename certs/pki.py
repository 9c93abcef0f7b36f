"""Certificate logic: create a CA, issue leaf certificates, decide what needs renewing.

Pure apart from drawing random keys: nothing here reads files or talks to Kubernetes, so
the renewal rules are unit-tested with a fixed clock.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Clocks drift between nodes; backdating keeps a fresh certificate valid everywhere.
_BACKDATE = dt.timedelta(minutes=5)


class Usage(Enum):
    SERVER = "server"
    CLIENT = "client"
    BOTH = "both"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> KeyPair:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("private key is not an ECDSA key")
        return cls(x509.load_pem_x509_certificate(cert_pem), key)


@dataclass(frozen=True)
class LeafSpec:
    """What a leaf certificate must say."""

    common_name: str
    usage: Usage
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    organization: str | None = None

    def san_set(self) -> frozenset[str]:
        return frozenset(self.dns_names) | frozenset(f"ip:{ip}" for ip in self.ip_addresses)


@dataclass(frozen=True)
class Validity:
    """Lifetimes and the renewal window."""

    ca_days: int = 3650
    leaf_days: int = 365
    renew_before: dt.timedelta | None = None
    """Renew when less than this remains; by default, a third of the certificate's lifetime."""

    def __post_init__(self) -> None:
        if self.ca_days < 1 or self.leaf_days < 1:
            raise ValueError("validity must be at least one day")
        if self.leaf_days > self.ca_days:
            raise ValueError("a leaf cannot outlive its CA: leaf validity exceeds CA validity")


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def create_ca(common_name: str, days: int, now: dt.datetime) -> KeyPair:
    key = new_key()
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue(ca: KeyPair, spec: LeafSpec, days: int, now: dt.datetime) -> KeyPair:
    key = new_key()
    not_after = min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc)
    usages = {
        Usage.SERVER: [ExtendedKeyUsageOID.SERVER_AUTH],
        Usage.CLIENT: [ExtendedKeyUsageOID.CLIENT_AUTH],
        Usage.BOTH: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    }[spec.usage]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.common_name, spec.organization))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in spec.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


def _sans_of(cert: x509.Certificate) -> frozenset[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    dns = ext.get_values_for_type(x509.DNSName)
    ips = [f"ip:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)]
    return frozenset(dns) | frozenset(ips)


def _renew_window(cert: x509.Certificate, validity: Validity) -> dt.timedelta:
    if validity.renew_before is not None:
        return validity.renew_before
    return (cert.not_valid_after_utc - cert.not_valid_before_utc) / 3


def expiry_reason(cert: x509.Certificate, validity: Validity, now: dt.datetime) -> str | None:
    """Why a certificate must be renewed for its age, or None while it is good."""
    if now >= cert.not_valid_after_utc:
        return "expired"
    if cert.not_valid_after_utc - now < _renew_window(cert, validity):
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}, inside the renewal window"
    return None


def leaf_renewal_reason(
    leaf: KeyPair, ca: KeyPair, spec: LeafSpec, validity: Validity, now: dt.datetime
) -> str | None:
    """Why an existing leaf must be re-issued, or None if it can be kept."""
    if leaf.cert.issuer != ca.cert.subject:
        return "not issued by the current CA"
    try:
        leaf.cert.verify_directly_issued_by(ca.cert)
    except (InvalidSignature, ValueError, TypeError):
        return "not signed by the current CA"
    if leaf.cert.public_key() != leaf.key.public_key():
        return "certificate does not match its key"
    if _sans_of(leaf.cert) != spec.san_set():
        return "subject alternative names changed"
    if leaf.cert.subject != _name(spec.common_name, spec.organization):
        return "subject changed"
    return expiry_reason(leaf.cert, validity, now)


@dataclass(frozen=True)
class Decision:
    """What `plan` decided for one certificate."""

    name: str
    action: str  # "create", "renew" or "keep"
    reason: str = ""


@dataclass
class Plan:
    """The outcome of planning: the certificates to write and why."""

    ca: KeyPair
    leaves: dict[str, KeyPair] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(d.action != "keep" for d in self.decisions)


def plan(
    existing_ca: KeyPair | None,
    existing_leaves: Mapping[str, KeyPair | None],
    specs: dict[str, LeafSpec],
    validity: Validity,
    now: dt.datetime,
) -> Plan:
    """Keep what is still good, renew what is near expiry or wrong, create what is missing.

    A renewed CA forces every leaf to be re-issued, since the old ones no longer chain.
    """
    decisions: list[Decision] = []
    ca = existing_ca
    ca_reason = None if ca is None else expiry_reason(ca.cert, validity, now)
    if ca is None or ca_reason:
        ca = create_ca("customer-friendly-operator CA", validity.ca_days, now)
        decisions.append(Decision("ca", "create" if existing_ca is None else "renew", ca_reason or ""))
    else:
        decisions.append(Decision("ca", "keep"))
    result = Plan(ca=ca, decisions=decisions)
    for name, spec in specs.items():
        old = existing_leaves.get(name)
        reason = None if old is None else leaf_renewal_reason(old, ca, spec, validity, now)
        if old is not None and reason is None:
            result.leaves[name] = old
            decisions.append(Decision(name, "keep"))
        else:
            result.leaves[name] = issue(ca, spec, validity.leaf_days, now)
            decisions.append(Decision(name, "create" if old is None else "renew", reason or ""))
    return result
