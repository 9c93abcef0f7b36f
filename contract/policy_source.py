"""The policy in force, read from its mounted ConfigMap (or YAML file) and re-read when it changes.

The webhook and the controller both hold one: a policy edit takes effect without a restart. A
policy that fails to parse is logged and ignored, the last good one stays in force; at start-up
a broken policy is fatal, since there is no last good one to keep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from customer_friendly.contract.policy import Policy, PolicyError, read_policy_path

logger = logging.getLogger(__name__)


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
