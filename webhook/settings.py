"""Read a Deployment's annotations into validated settings, under the cluster policy.

Pure: one function from (annotations, container names, policy) to Settings, or a Refusal
whose message names the annotation and what it accepts, because that message is what the
user sees from `kubectl apply`.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import contract as c
from webhook.policy import DNS_SUBDOMAIN, Policy, parse_max_unavailable


class Refusal(ValueError):
    """The Deployment cannot be admitted; the message is shown to the user by kubectl."""


@dataclass(frozen=True)
class Settings:
    """Everything the mutation needs, with the policy's defaults filled in."""

    release: str
    source: str
    container: str
    code_path: str
    restart: str
    pre_stop_seconds: int
    max_request_seconds: int
    max_unavailable: str
    canary: int
    volume: str
    storage_class: str
    paused: bool
    migrate: str | None = None
    migrate_timeout: int = 600
    process: str | None = None
    quiet_signal: str = "TSTP"
    drain_seconds: int = 30


def _refuse(annotation: str, value: str, accepts: str) -> Refusal:
    return Refusal(f"annotation {annotation}={value!r} is invalid: it accepts {accepts}")


def _bool(annotations: Mapping[str, str], name: str) -> bool:
    value = annotations.get(name, "false")
    if value not in ("true", "false"):
        raise _refuse(name, value, '"true" or "false"')
    return value == "true"


def _seconds(annotations: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = annotations.get(name)
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]+", value.strip()) or not low <= int(value) <= high:
        raise _refuse(name, value, f"whole seconds from {low} to {high} (the policy's bound)")
    return int(value)


def opted_in(annotations: Mapping[str, str] | None) -> bool:
    """True for `enabled: "true"`; raises for a value that is neither true nor false."""
    return _bool(annotations or {}, c.ENABLED)


def check_source(source: str, policy: Policy) -> None:
    if not source.startswith(c.SOURCE_SCHEMES):
        raise _refuse(c.SOURCE, source, "a URI starting with " + ", ".join(c.SOURCE_SCHEMES)
                      + f" and containing {c.RELEASE_PLACEHOLDER}")
    if c.RELEASE_PLACEHOLDER not in source:
        raise _refuse(c.SOURCE, source, f"a URI template containing {c.RELEASE_PLACEHOLDER}, "
                      "which is replaced by the release id")
    if policy.allowedSourcePrefixes and not source.startswith(policy.allowedSourcePrefixes):
        raise _refuse(c.SOURCE, source, "only sources under the policy's allowed prefixes: "
                      + ", ".join(policy.allowedSourcePrefixes))


def check_code_path(path: str) -> None:
    normal = posixpath.normpath(path) if path else ""
    if not path.startswith("/") or normal != path or normal == "/" or "//" in path:
        raise _refuse(c.CODE_PATH, path, "an absolute, normalised directory path other than /, such as /app")


def resolve(annotations: Mapping[str, str], containers: Sequence[str], policy: Policy) -> Settings:
    """Settings for an opted-in Deployment; raises Refusal for anything invalid."""
    release = annotations.get(c.RELEASE, "")
    if not release:
        raise Refusal(f"annotation {c.RELEASE} is required when {c.ENABLED} is \"true\": "
                      "set it to the release id to serve, such as v42")
    if not c.is_release_id(release):
        raise _refuse(c.RELEASE, release, "a release id matching " + c.RELEASE_ID_PATTERN
                      + " (letters, digits, '.', '_' and '-', at most 63 characters)")
    source = annotations.get(c.SOURCE, "")
    if not source:
        raise Refusal(f"annotation {c.SOURCE} is required when {c.ENABLED} is \"true\": set it to a "
                      f"release URI template such as s3://bucket/app/{c.RELEASE_PLACEHOLDER}.tar.gz")
    check_source(source, policy)

    if not containers:
        raise Refusal("the pod template has no containers")
    container = annotations.get(c.CONTAINER, containers[0])
    if container not in containers:
        raise _refuse(c.CONTAINER, container, "the name of one of the pod template's containers: "
                      + ", ".join(containers))
    code_path = annotations.get(c.CODE_PATH, "/app")
    check_code_path(code_path)

    restart = annotations.get(c.RESTART, policy.restart)
    if not c.is_restart_mode(restart):
        raise _refuse(c.RESTART, restart, c.RESTART_ACCEPTS)
    role = annotations.get(c.ROLE)
    if role is not None and role not in c.ROLES:
        raise _refuse(c.ROLE, role, "web, worker or cron")
    app = annotations.get(c.APP)
    if app is not None and not DNS_SUBDOMAIN.match(app):
        raise _refuse(c.APP, app, "an app name (lower-case letters, digits, '-' and '.')")
    quiet = annotations.get(c.QUIET_SIGNAL, "TSTP")
    if quiet not in c.SIGNAL_NAMES:
        raise _refuse(c.QUIET_SIGNAL, quiet, "a signal name: " + ", ".join(c.SIGNAL_NAMES))
    pattern = annotations.get(c.PROCESS)
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as err:
            raise _refuse(c.PROCESS, pattern, f"a regular expression for the process title ({err})") from err
    max_unavailable = annotations.get(c.MAX_UNAVAILABLE, policy.maxUnavailable)
    if parse_max_unavailable(max_unavailable) is None:
        raise _refuse(c.MAX_UNAVAILABLE, max_unavailable,
                      "a whole number of pods (N >= 1) or a percentage (1% to 100%)")
    canary_raw = annotations.get(c.CANARY)
    if canary_raw is not None and not re.fullmatch(r"[0-9]+", canary_raw.strip()):
        raise _refuse(c.CANARY, canary_raw, "a whole number of pods, 0 or more")
    volume = annotations.get(c.VOLUME, policy.volume)
    if volume not in c.VOLUME_KINDS:
        raise _refuse(c.VOLUME, volume, "efs (a per-pod EFS access point) or emptyDir")
    storage_class = annotations.get(c.STORAGE_CLASS, policy.storageClass)
    if not DNS_SUBDOMAIN.match(storage_class):
        raise _refuse(c.STORAGE_CLASS, storage_class, "a StorageClass name (lower-case DNS subdomain)")

    migrate = annotations.get(c.MIGRATE)
    if migrate is not None and not migrate.strip():
        raise _refuse(c.MIGRATE, migrate, "a shell command such as 'bin/rails db:migrate'")
    return Settings(
        release=release,
        source=source,
        container=container,
        code_path=code_path,
        restart=restart,
        pre_stop_seconds=_seconds(annotations, c.PRE_STOP_SECONDS, policy.preStopSeconds, 0,
                                  policy.maxPreStopSeconds),
        max_request_seconds=_seconds(annotations, c.MAX_REQUEST_SECONDS, policy.maxRequestSeconds, 1,
                                     policy.maxMaxRequestSeconds),
        max_unavailable=max_unavailable,
        canary=policy.canary if canary_raw is None else int(canary_raw),
        volume=volume,
        storage_class=storage_class,
        paused=_bool(annotations, c.PAUSED),
        migrate=migrate,
        migrate_timeout=_seconds(annotations, c.MIGRATE_TIMEOUT, 600, 1, 86400),
        process=pattern,
        quiet_signal=quiet,
        drain_seconds=_seconds(annotations, c.DRAIN_SECONDS, 30, 0, 3600),
    )


def unknown_annotation_warnings(annotations: Mapping[str, str]) -> list[str]:
    """Warn about our-prefixed annotations we do not know, which are most often typos."""
    warnings = []
    for name in sorted(annotations):
        if name.startswith(c.PREFIX) and name not in c.KNOWN_ANNOTATIONS:
            guess = difflib.get_close_matches(name, sorted(c.KNOWN_ANNOTATIONS), n=1)
            hint = f"; did you mean {guess[0]}?" if guess else ""
            warnings.append(f"unknown annotation {name} is ignored{hint}")
    return warnings
