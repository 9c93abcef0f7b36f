"""The webhook's configuration: a frozen dataclass built in one place from flags and environment."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# etcd refuses requests over 1.5 MiB; an AdmissionReview carries the object up to twice
# (object and oldObject) plus framing, so 7 MiB, as controller-runtime allows, is ample.
MAX_REVIEW_BYTES = 7 * 1024 * 1024


@dataclass(frozen=True)
class WebhookConfig:
    policy_path: Path | None = None
    """Mounted policy ConfigMap (directory) or YAML file; None uses the built-in defaults."""
    max_review_bytes: int = MAX_REVIEW_BYTES
    """Larger request bodies are refused with 413."""
    policy_check_seconds: float = 2.0
    """How often, at most, the policy file is checked for changes."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookConfig:
        env = os.environ if env is None else env
        path = env.get("CFO_POLICY_PATH")
        return cls(
            policy_path=Path(path) if path else None,
            max_review_bytes=int(env.get("CFO_MAX_REVIEW_BYTES", MAX_REVIEW_BYTES)),
        )
