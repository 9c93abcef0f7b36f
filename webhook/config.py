"""The webhook's configuration (contract.config's pattern): flags override the environment."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from customer_friendly.contract.config import Setting, number, read, whole

# etcd refuses requests over 1.5 MiB; an AdmissionReview carries the object up to twice
# (object and oldObject) plus framing, so 7 MiB, as controller-runtime allows, is ample.
MAX_REVIEW_BYTES = 7 * 1024 * 1024

SETTINGS: tuple[Setting, ...] = (
    Setting("CFO_WEBHOOK_BIND", "--bind", "0.0.0.0:8443", "address:port to listen on"),
    Setting("CFO_TLS_CERT", "--cert", "/etc/cfo/tls/tls.crt", "serving certificate, PEM; reloaded when it changes"),
    Setting("CFO_TLS_KEY", "--key", "/etc/cfo/tls/tls.key", "serving key, PEM; reloaded when it changes"),
    Setting("CFO_WEBHOOK_WORKERS", "--workers", "1", "gunicorn worker processes"),
    Setting("CFO_WEBHOOK_THREADS", "--threads", "4", "gthread threads per worker"),
    Setting("CFO_POLICY_PATH", "--policy", None, "policy ConfigMap directory or YAML file; default: built-in"),
    Setting("CFO_MAX_REVIEW_BYTES", "--max-review-bytes", str(MAX_REVIEW_BYTES),
            "larger AdmissionReview bodies are refused with 413"),
    Setting("CFO_POLICY_CHECK_SECONDS", "--policy-check-seconds", "2", "how often, at most, the policy file is "
            "checked for changes"),
    Setting("CFO_LOG_LEVEL", "--log-level", "info", "debug, info, warning or error"),
)


@dataclass(frozen=True)
class WebhookConfig:
    policy_path: Path | None = None
    """Mounted policy ConfigMap (directory) or YAML file; None uses the built-in defaults."""
    max_review_bytes: int = MAX_REVIEW_BYTES
    """Larger request bodies are refused with 413."""
    policy_check_seconds: float = 2.0
    """How often, at most, the policy file is checked for changes."""
    bind: str = "0.0.0.0:8443"
    cert: Path = Path("/etc/cfo/tls/tls.crt")
    key: Path = Path("/etc/cfo/tls/tls.key")
    workers: int = 1
    threads: int = 4
    log_level: str = "info"

    @classmethod
    def from_env(cls, args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> WebhookConfig:
        """The one place the webhook's configuration is read; ValueError names the setting."""
        values = read(SETTINGS, args, env)
        path = values["CFO_POLICY_PATH"]
        return cls(
            policy_path=Path(path) if path else None,
            max_review_bytes=whole(values, "CFO_MAX_REVIEW_BYTES", 1024),
            policy_check_seconds=number(values, "CFO_POLICY_CHECK_SECONDS", 0),
            bind=values["CFO_WEBHOOK_BIND"] or "0.0.0.0:8443",
            cert=Path(values["CFO_TLS_CERT"] or ""),
            key=Path(values["CFO_TLS_KEY"] or ""),
            workers=whole(values, "CFO_WEBHOOK_WORKERS", 1),
            threads=whole(values, "CFO_WEBHOOK_THREADS", 1),
            log_level=values["CFO_LOG_LEVEL"] or "info",
        )
