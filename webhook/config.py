"""The webhook's settings, read from the environment in one place, and the live policy.

The policy file (a mounted ConfigMap directory or a YAML file) is re-read when it changes,
so a policy edit takes effect without a restart. A policy that fails to parse is logged and
ignored: the last good one stays in force.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from webhook.policy import Policy, PolicyError, read_policy_path

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


def _fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Changes whenever the file, or any key of a mounted ConfigMap, changes."""
    entries = sorted(path.iterdir()) if path.is_dir() else [path]
    out = []
    for entry in entries:
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        out.append((entry.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


class PolicySource:
    """The policy in force, re-read when its file changes; thread-safe."""

    def __init__(self, path: Path | None, check_seconds: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.check_seconds = check_seconds
        self.clock = clock
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._policy = Policy()
        self._fingerprint: object = None
        self._checked_at = float("-inf")
        if path is not None:
            # At start-up a broken policy is fatal: there is no last good one to keep.
            self._policy = read_policy_path(path)
            self._fingerprint = _fingerprint(path)

    def current(self) -> Policy:
        if self.path is None:
            return self._policy
        with self._lock:
            now = self.clock()
            if now - self._checked_at >= self.check_seconds:
                self._checked_at = now
                self._reload_if_changed(self.path)
            return self._policy

    def _reload_if_changed(self, path: Path) -> None:
        try:
            fingerprint = _fingerprint(path)
        except OSError as err:
            self.last_error = f"cannot read policy {path}: {err}"
            logger.error("%s; keeping the last good policy", self.last_error)
            return
        if fingerprint == self._fingerprint:
            return
        try:
            policy = read_policy_path(path)
        except (PolicyError, OSError, ValueError) as err:
            self.last_error = str(err)
            logger.error("invalid policy, keeping the last good one: %s", err)
        else:
            self._policy, self.last_error = policy, None
            logger.info("policy reloaded from %s", path)
        self._fingerprint = fingerprint
