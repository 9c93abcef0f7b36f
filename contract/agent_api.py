"""The agent's API, one schema for both ends of the wire: the controller builds and sends these
types, the agent parses and answers with the same ones. Also the environment names the webhook
injects into the agent's containers and the agent reads. Pure.

Python names inside, wire names at the edge: fields are snake_case; `to_json()` writes, and
`from_json()` reads and validates, the JSON bodies (camelCase for requests, as they always were;
the status keeps the snake_case keys it has always had).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from customer_friendly.contract import (
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_QUIET_SIGNAL,
    RELEASE_ID_PATTERN,
    RELEASE_PLACEHOLDER,
    RESTART_ACCEPTS,
    SIGNAL_NAMES,
    SOURCE_SCHEMES,
    is_release_id,
    is_restart_mode,
)

HEALTH_PATH = "/healthz"
STATUS_PATH = "/v1/status"
RELEASE_PATH = "/v1/release"
ROLLBACK_PATH = "/v1/rollback"

# The agent's states, as its status reports them.
IDLE, FETCHING, RESTARTING, DONE, FAILED = "idle", "fetching", "restarting", "done", "failed"
RUNNING_STATES = (FETCHING, RESTARTING)
PROCESS_RESTARTS = ("drain",)
"""Restart modes that stop a process (rather than signal Puma to reload) and so take the options
below; `signal:<NAME>` is one too."""
MAX_DEADLINE_SECONDS = 3600
MAX_DRAIN_SECONDS = 3600


class AgentEnv:
    """Environment names shared by the webhook (which injects them), the controller's migration
    Job and the agent (whose flags they back). Names starting with CFO_ are reserved for these."""

    RELEASE = "CFO_RELEASE"
    RELEASE_DEFAULT = "CFO_RELEASE_DEFAULT"
    SOURCE = "CFO_SOURCE"
    SOURCE_DEFAULT = "CFO_SOURCE_DEFAULT"
    CODE_PATH = "CFO_CODE_PATH"
    APP_CONTAINER = "CFO_APP_CONTAINER"
    KEEP_RELEASES = "CFO_KEEP_RELEASES"
    REQUIRE_SHA256 = "CFO_REQUIRE_SHA256"
    AGENT_PORT = "CFO_AGENT_PORT"
    POD_NAME = "CFO_POD_NAME"
    POD_NAMESPACE = "CFO_POD_NAMESPACE"
    CLIENT_CA = "CFO_CLIENT_CA"
    HEALTH_URL = "CFO_HEALTH_URL"
    """The app's readiness probe as a URL from inside the pod: a restart is done once it answers."""


@dataclass(frozen=True)
class RestartOptions:
    """How the agent restarts the app after `current` moves."""

    restart: str = "phased"
    """phased, hot, drain or signal:<NAME> (contract.RESTART_MODES)."""
    allow_hot: bool = False
    """A phased restart Puma cannot do (single mode, preload_app!) may fall back to hot."""
    deadline_seconds: float | None = None
    """None: the agent's own restart deadline."""
    process: str | None = None
    """drain and signal: a pattern for the process title (default: the Puma master)."""
    quiet_signal: str = DEFAULT_QUIET_SIGNAL
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    surge: bool = False
    """phased: one worker more while the restart lasts (TTIN after USR1, TTOU once all are booted)."""

    @property
    def stops_a_process(self) -> bool:
        return self.restart in PROCESS_RESTARTS or self.restart.startswith("signal:")

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"restart": self.restart}
        if self.allow_hot:
            body["allowHot"] = True
        if self.surge:
            body["surge"] = True
        if self.deadline_seconds is not None:
            body["deadlineSeconds"] = self.deadline_seconds
        if self.stops_a_process:
            body.update(quietSignal=self.quiet_signal, drainSeconds=self.drain_seconds)
            if self.process:
                body["process"] = self.process
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RestartOptions:
        """Validate; ValueError names the field and what it accepts."""
        restart = body.get("restart", "phased")
        if not isinstance(restart, str) or not is_restart_mode(restart):
            raise ValueError(f"restart must be {RESTART_ACCEPTS}")
        deadline = body.get("deadlineSeconds")
        if deadline is not None and (not _number(deadline) or not 1 <= deadline <= MAX_DEADLINE_SECONDS):
            raise ValueError(f"deadlineSeconds must be a number from 1 to {MAX_DEADLINE_SECONDS}")
        process = body.get("process")
        if process is not None:
            try:
                re.compile(process)
            except (re.error, TypeError, OverflowError, RecursionError) as err:
                raise ValueError(f"process must be a regular expression for the process title ({err})") from err
        quiet = body.get("quietSignal", DEFAULT_QUIET_SIGNAL)
        if quiet not in SIGNAL_NAMES:
            raise ValueError("quietSignal must be one of " + ", ".join(SIGNAL_NAMES))
        drain = body.get("drainSeconds", DEFAULT_DRAIN_SECONDS)
        if not _number(drain) or not 0 <= drain <= MAX_DRAIN_SECONDS:
            raise ValueError(f"drainSeconds must be a number from 0 to {MAX_DRAIN_SECONDS}")
        surge = body.get("surge", False)
        if not isinstance(surge, bool):
            raise ValueError("surge must be true or false")
        return cls(restart=restart, allow_hot=bool(body.get("allowHot", False)), deadline_seconds=deadline,
                   process=process, quiet_signal=quiet, drain_seconds=float(drain), surge=surge)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class ReleaseRequest:
    """POST /v1/release: go to `release`, fetched from `source`, and restart as `options` say."""

    release: str
    source: str
    options: RestartOptions = field(default_factory=RestartOptions)

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "source": self.source, **self.options.to_json()}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ReleaseRequest:
        """Validate; ValueError names the field and what it accepts."""
        release, source = body.get("release"), body.get("source")
        if not isinstance(release, str) or not is_release_id(release):
            raise ValueError(f"release must be a release id matching {RELEASE_ID_PATTERN}")
        if not isinstance(source, str) or not source.startswith(SOURCE_SCHEMES) or RELEASE_PLACEHOLDER not in source:
            raise ValueError("source must be an " + ", ".join(SOURCE_SCHEMES)
                             + f" URI template containing {RELEASE_PLACEHOLDER}")
        return cls(release, source, RestartOptions.from_json(body))


@dataclass(frozen=True)
class AgentStatus:
    """GET /v1/status, and the answer to every POST: what the agent serves and is doing."""

    state: str = IDLE
    target: str | None = None
    """The release the last operation moved to."""
    release: str | None = None
    """What `current` points at now."""
    error: str | None = None
    previous: str | None = None
    restart: str | None = None
    note: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    puma: dict[str, Any] = field(default_factory=dict)
    steps: tuple[str, ...] = ()
    """What a drain or signal restart did, in order."""
    reverted: bool | None = None
    """After a failure: True when `current` and `previous` were put back as they were, False when
    that failed, None when they had not moved."""
    puma_restored: bool | None = None
    """After a failure: True when the signalled process was restarted on the old release again,
    False when it could not be (or is not the agent's to restart), None when it was never signalled."""
    asked: dict[str, int] = field(default_factory=dict)
    """How many times each release was asked for (a request for the served release counts too)."""

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["steps"] = list(self.steps)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> AgentStatus:
        """Lenient: an older or newer agent may leave fields out or add some."""
        known = {f.name: body[f.name] for f in fields(cls) if f.name in body}
        known["steps"] = tuple(known.get("steps") or ())
        return cls(**known)
