"""The user-facing contract shared by the webhook, the controller and the agent.

Annotation names, the release-id pattern and the names of everything we inject live here,
once, so that the three components cannot drift apart. Nothing in this package does I/O.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "customer-friendly.dev/"

# Annotations a user sets on the Deployment's metadata (never on the pod template, so that
# changing a release never triggers a native rollout).
ENABLED = PREFIX + "enabled"
RELEASE = PREFIX + "release"
SOURCE = PREFIX + "source"
CONTAINER = PREFIX + "container"
CODE_PATH = PREFIX + "code-path"
RESTART = PREFIX + "restart"
PRE_STOP_SECONDS = PREFIX + "pre-stop-seconds"
MAX_REQUEST_SECONDS = PREFIX + "max-request-seconds"
MAX_UNAVAILABLE = PREFIX + "max-unavailable"
CANARY = PREFIX + "canary"
VOLUME = PREFIX + "volume"
STORAGE_CLASS = PREFIX + "storage-class"
PAUSED = PREFIX + "paused"
MIGRATE = PREFIX + "migrate"
"""A command run once per release, as a Job on the new release, before any pod is touched."""
MIGRATE_TIMEOUT = PREFIX + "migrate-timeout"
RETRY = PREFIX + "retry"
APP = PREFIX + "app"
"""Deployments sharing a value are released together: web first, then workers, then cron."""
ROLE = PREFIX + "role"
"""web, worker or cron; by default web for phased/hot restarts and worker for the others."""
ROLES = ("web", "worker", "cron")
PROCESS = PREFIX + "process"
"""For drain and signal: a regular expression matched against the process title (default: Puma)."""
QUIET_SIGNAL = PREFIX + "quiet-signal"
DRAIN_SECONDS = PREFIX + "drain-seconds"
"""Any new value restarts a release that failed (the release id alone cannot change)."""

WORKER_SURGE = PREFIX + "worker-surge"
""""false" turns off the extra Puma worker of a phased restart (the policy's workerSurge is the default)."""
TRAFFIC = PREFIX + "traffic"
"""live (default): a pod serves through its restart. drain: it leaves the Service's endpoints first."""
SETTLE_SECONDS = PREFIX + "settle-seconds"
"""traffic: drain: how long a pod waits, once out of the endpoints, before it restarts."""

# Written by the controller.
ROLLOUT = PREFIX + "rollout"

USER_ANNOTATIONS = (
    ENABLED, RELEASE, SOURCE, CONTAINER, CODE_PATH, RESTART, PRE_STOP_SECONDS,
    MAX_REQUEST_SECONDS, MAX_UNAVAILABLE, CANARY, VOLUME, STORAGE_CLASS, PAUSED, RETRY,
    MIGRATE, MIGRATE_TIMEOUT, PROCESS, QUIET_SIGNAL, DRAIN_SECONDS, APP, ROLE, WORKER_SURGE, TRAFFIC,
    SETTLE_SECONDS,
)
KNOWN_ANNOTATIONS = frozenset((*USER_ANNOTATIONS, ROLLOUT))

RELEASE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
RELEASE_ID = re.compile(RELEASE_ID_PATTERN)


def is_release_id(value: str) -> bool:
    """True for a valid release id. fullmatch, because `$` alone would accept "v1\\n"."""
    return RELEASE_ID.fullmatch(value) is not None

CONTROLLER_FIELD_MANAGER = "customer-friendly-controller"
"""The field manager of what the controller writes (its user agent): the rollout record, pods'
release marks, release ConfigMaps."""
PLUGIN_FIELD_MANAGER = "kubectl-cfo"
"""The field manager of what `kubectl cfo` writes: the release, paused."""

RELEASE_PLACEHOLDER = "{release}"
SOURCE_SCHEMES = ("s3://", "https://", "file://")

RESTART_MODES = ("phased", "hot", "drain")
"""phased: Puma SIGUSR1. hot: Puma SIGUSR2. drain: a worker (Sidekiq, cron) is quieted, then
TERMed, and the kubelet restarts its container on the new code. Also `signal:<NAME>`."""
SIGNAL_PREFIX = "signal:"
DEFAULT_QUIET_SIGNAL = "TSTP"
"""Sidekiq's "stop fetching jobs"; drain sends it, waits, then TERM."""
DEFAULT_DRAIN_SECONDS = 30
SIGNAL_NAMES = ("HUP", "USR1", "USR2", "TTIN", "TTOU", "WINCH", "QUIT", "INT", "TERM", "TSTP", "CONT")


def is_restart_mode(value: str) -> bool:
    """phased, hot, drain, or signal:<NAME> for a server that reloads on a signal (gunicorn: HUP)."""
    if value.startswith(SIGNAL_PREFIX):
        return value[len(SIGNAL_PREFIX):] in SIGNAL_NAMES
    return value in RESTART_MODES


TRAFFIC_LIVE = "live"
TRAFFIC_DRAIN = "drain"
TRAFFIC_MODES = (TRAFFIC_LIVE, TRAFFIC_DRAIN)
DEFAULT_SETTLE_SECONDS = 5
"""Long enough for kube-proxy on every node to drop a pod that left the EndpointSlices; behind a
cloud load balancer that targets pods, set settle-seconds to its deregistration delay."""
IN_PLACE_READY = PREFIX + "in-place-ready"
"""The pod readiness gate (and condition type) of traffic: drain: the controller sets it False to
take a pod out of the Service's endpoints before its restart, and True once it serves again."""

RESTART_ACCEPTS = "phased (SIGUSR1, Puma cluster mode), hot (SIGUSR2), drain (quiet, then TERM) or signal:<NAME>"
VOLUME_KINDS = ("efs", "emptyDir")

# Names of what the webhook injects. They double as the markers that make the mutation
# idempotent: an object that already carries them is updated in place, never duplicated.
CODE_VOLUME = "cfo-code"
FETCH_CONTAINER = "cfo-fetch"
AGENT_CONTAINER = "cfo-agent"
AGENT_PORT_NAME = "cfo-agent"
RELEASE_CONFIGMAP_KEY = "release"
AGENT_ENV_PREFIX = "CFO_"
"""The agent's own environment variables; the cluster policy's agentEnv may not use it."""
# Pod-template annotation recording the values we injected, so that a later mutation can
# tell our preStop and grace period from the user's own (which are never shortened).
INJECTED = PREFIX + "injected"

_MAX_NAME = 253


def migration_job_name(deployment_name: str, release: str) -> str:
    """One Job per Deployment and release: finding it again is how a restart never migrates twice."""
    name = f"{deployment_name}-migrate-{release}".lower().replace("_", "-").replace(".", "-")
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(f"{deployment_name}/{release}".encode()).hexdigest()[:10]
    return f"{name[:63 - len(digest) - 1].rstrip('-')}-{digest}"


def release_configmap_name(deployment_name: str) -> str:
    """Name of the ConfigMap holding a Deployment's wanted release.

    Deterministic, so the webhook and the controller agree without talking; long names are
    shortened with a hash so that the result is still a valid, unique object name.
    """
    name = f"{deployment_name}-cfo-release"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(deployment_name.encode()).hexdigest()[:10]
    return f"{deployment_name[:_MAX_NAME - len(digest) - 13]}-{digest}-cfo-release"
