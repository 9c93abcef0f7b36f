"""Read a Deployment's annotations into validated settings, under the cluster policy.

Pure: one function from (annotations, container names, policy) to ReleaseSettings, or a Refusal
whose message names the annotation and what it accepts, because that message is what the
user sees from `kubectl apply`.
"""

from __future__ import annotations

import difflib
import heapq
import ipaddress
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from customer_friendly import contract as c
from customer_friendly.contract.agent_api import RestartOptions
from customer_friendly.contract.policy import DNS_SUBDOMAIN, Policy, parse_max_unavailable


class Refusal(ValueError):
    """The Deployment cannot be admitted; the message is shown to the user by kubectl."""


@dataclass(frozen=True)
class ReleaseSettings:
    """A Deployment's annotations resolved under the policy: what the webhook injects and the
    controller rolls out, so both read every annotation the same way."""

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
    quiet_signal: str = c.DEFAULT_QUIET_SIGNAL
    drain_seconds: int = c.DEFAULT_DRAIN_SECONDS
    worker_surge: bool = False
    traffic: str = c.TRAFFIC_LIVE
    settle_seconds: int = c.DEFAULT_SETTLE_SECONDS

    @property
    def drains_traffic(self) -> bool:
        """The pod leaves the Service's endpoints before its restart (a readiness gate holds it out)."""
        return self.traffic == c.TRAFFIC_DRAIN

    def restart_options(self) -> RestartOptions:
        """What the controller asks each agent to do after `current` moves."""
        return RestartOptions(restart=self.restart, process=self.process, quiet_signal=self.quiet_signal,
                              drain_seconds=self.drain_seconds, surge=self.worker_surge and self.restart == "phased")


# Every message quotes what the user wrote; a value can be megabytes long, so it is shortened.
_SHOWN = 100


def show(value: object) -> str:
    """A value for a message: its repr, shortened to about _SHOWN characters."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."


def show_names(names: Sequence[str], limit: int = 10) -> str:
    """A comma-separated list for a message, at most `limit` entries and each shortened."""
    shown = [name if len(name) <= _SHOWN else name[:_SHOWN - 3] + "..." for name in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(shown) + more


def _refuse(annotation: str, value: str, accepts: str) -> Refusal:
    """`annotation` names where the value came from: an annotation, or an option (`--source`)."""
    where = annotation if annotation.startswith("--") else f"annotation {annotation}"
    return Refusal(f"{where}={show(value)} is invalid: it accepts {accepts}")


# ASCII digits only ([0-9], never str.isdigit, which accepts '²' that int() refuses), and at
# most 9 of them: far above any bound here, far below int()'s digit limit and int64.
_WHOLE = re.compile(r"[0-9]{1,9}")


def whole_number(text: str) -> int | None:
    """A non-negative whole number written in ASCII digits (blanks around it allowed), else None."""
    stripped = text.strip().lstrip("0") or ("0" if text.strip() else "")
    return int(stripped) if _WHOLE.fullmatch(stripped) else None


def _bool(annotations: Mapping[str, str], name: str) -> bool:
    value = annotations.get(name, "false")
    if value not in ("true", "false"):
        raise _refuse(name, value, '"true" or "false"')
    return value == "true"


def _seconds(annotations: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = annotations.get(name)
    if value is None:
        return default
    number = whole_number(value)
    if number is None or not low <= number <= high:
        raise _refuse(name, value, f"whole seconds from {low} to {high} (the policy's bound)")
    return number


def opted_in(annotations: Mapping[str, str] | None) -> bool:
    """True for `enabled: "true"`; raises for a value that is neither true nor false."""
    return _bool(annotations or {}, c.ENABLED)


MAX_SOURCE_LENGTH = 2048
"""Longer release URI templates are refused (they are copied into every pod's environment)."""
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


def _printable(text: str) -> bool:
    """No control, format or line-separator characters (a plain space is fine)."""
    return text.isprintable()


def _valid_authority(netloc: str) -> bool:
    """host[:port], where host is a DNS name, an IPv4 address or a bracketed IPv6 address."""
    if netloc.startswith("["):
        host, _, after = netloc[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        if after and not after.startswith(":"):
            return False
        port = after[1:] if after else None
    else:
        host, colon, port_text = netloc.partition(":")
        port = port_text if colon else None
        labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
        if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
            return False
    return port is None or (_PORT.fullmatch(port) is not None and 1 <= int(port) <= 65535)


_TEMPLATE = f"a URI template containing {c.RELEASE_PLACEHOLDER}, which is replaced by the release id"
"""What a release source accepts; most source messages extend it."""


def _source_text_problem(source: str) -> str | None:
    """The checks every scheme shares: length, scheme, characters, no fragment, the placeholder."""
    if len(source) > MAX_SOURCE_LENGTH:
        return f"{_TEMPLATE}, at most {MAX_SOURCE_LENGTH} characters"
    if not source.startswith(c.SOURCE_SCHEMES):
        return "a URI starting with " + ", ".join(c.SOURCE_SCHEMES) + f" and containing {c.RELEASE_PLACEHOLDER}"
    decoded = unquote(source)
    if not _printable(source) or not _printable(decoded) or "\\" in decoded:
        return f"{_TEMPLATE}, without control characters, line breaks, invisible characters or backslashes"
    if "#" in source:
        return f"{_TEMPLATE}, without a fragment ('#'), which no download would send"
    if c.RELEASE_PLACEHOLDER not in source:
        return _TEMPLATE
    return None


def _s3_path(source: str) -> tuple[str | None, str]:
    """(problem, "") for a bad s3:// source, else (None, its key) for the shared path checks."""
    bucket, _, key = source.split("://", 1)[1].partition("/")
    if not _S3_BUCKET.fullmatch(bucket) or ".." in bucket:
        return ("s3://BUCKET/KEY with a bucket name of 3 to 63 lower-case letters, digits, '.' and '-' "
                f"and a key containing {c.RELEASE_PLACEHOLDER}"), ""
    if c.RELEASE_PLACEHOLDER not in key:
        return f"s3://BUCKET/KEY with {c.RELEASE_PLACEHOLDER} in the key, not in the bucket name", ""
    return None, key


def _https_path(source: str) -> tuple[str | None, str]:
    """(problem, "") for a bad https:// source, else (None, its path) for the shared path checks."""
    try:
        parts = urlsplit(source)
    except ValueError:
        return f"https://HOST/PATH with a valid host name and {c.RELEASE_PLACEHOLDER} in the path", ""
    if "@" in parts.netloc:
        return ("https://HOST/PATH without a user name or password (give credentials to the agent "
                "through the policy's agentEnv)"), ""
    if not _valid_authority(parts.netloc):
        return (f"https://HOST/PATH with a host name (or IP address, optionally :port) and "
                f"{c.RELEASE_PLACEHOLDER} in the path or query"), ""
    return None, parts.path


def _file_path(source: str) -> tuple[str | None, str]:
    """(problem, "") for a bad file:// source, else (None, its path) for the shared path checks."""
    authority, slash, path = source.split("://", 1)[1].partition("/")
    path = slash + path
    if authority not in ("", "localhost") or not path.startswith("/") or "//" in path:
        return f"file:///ABSOLUTE/PATH (three slashes) with {c.RELEASE_PLACEHOLDER} in the file name", ""
    return None, path


_SCHEME_PATHS: dict[str, Callable[[str], tuple[str | None, str]]] = {"s3": _s3_path, "https": _https_path,
                                                                     "file": _file_path}
"""Each scheme's own checks, returning (problem, path); the path then gets the shared checks."""


def _source_problem(source: str) -> str | None:
    """What is wrong with a release URI template (never the policy's part), or None."""
    problem = _source_text_problem(source)
    if problem:
        return problem
    scheme = source.split("://", 1)[0]
    problem, path = _SCHEME_PATHS.get(scheme, _file_path)(source)
    if problem:
        return problem
    if any(segment in (".", "..") for segment in unquote(path).split("/")):
        return f"{_TEMPLATE}, without '.' or '..' path segments"
    return None


def _under_prefix(source: str, prefix: str) -> bool:
    """`source` lies under an allowed prefix, never merely beside it.

    A prefix that stops inside the host or bucket name ("https://releases.acme.com") allows that
    host or bucket only, not "https://releases.acme.com.evil.io/"; a file:// prefix that does not
    end with '/' allows that directory, not its siblings ("file:///srv/releases-other/").
    """
    if not source.startswith(prefix):
        return False
    rest = source[len(prefix):]
    if prefix.endswith("/") or not rest or rest.startswith("/"):
        return True
    authority_ends = "/" in prefix.split("://", 1)[1]
    return authority_ends and not prefix.startswith("file://")


def check_source(source: str, policy: Policy, annotation: str = c.SOURCE) -> None:
    """Refuse a release URI template that is malformed or outside the policy's allowed prefixes."""
    problem = _source_problem(source)
    if problem:
        raise _refuse(annotation, source, problem)
    if policy.allowed_source_prefixes and not any(_under_prefix(source, prefix)
                                                for prefix in policy.allowed_source_prefixes):
        raise _refuse(annotation, source, "only sources under the policy's allowed prefixes: "
                      + ", ".join(policy.allowed_source_prefixes))


MAX_CODE_PATH_LENGTH = 1024
SYSTEM_PATHS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/opt/cfo", "/proc",
                "/root", "/run", "/sbin", "/sys", "/usr", "/var/lib", "/var/run")
"""The code volume is mounted at the code path in the app, cfo-fetch and cfo-agent alike, and its
content comes from release archives: over any of these (or a directory holding one, like /var)
it would hide or replace system files, the agent's own program (/opt/cfo) or the service
account token (/var/run/secrets)."""


def check_code_path(path: str) -> None:
    normal = posixpath.normpath(path) if path else ""
    accepts = "an absolute, normalised directory path other than /, such as /app"
    if not path.startswith("/") or normal != path or normal == "/" or "//" in path:
        raise _refuse(c.CODE_PATH, path, accepts)
    if len(path) > MAX_CODE_PATH_LENGTH or not _printable(path):
        raise _refuse(c.CODE_PATH, path, f"{accepts}, of at most {MAX_CODE_PATH_LENGTH} printable characters")
    for system in SYSTEM_PATHS:
        if path == system or path.startswith(system + "/") or system.startswith(path + "/"):
            raise _refuse(c.CODE_PATH, path, f"{accepts}, outside the system directories "
                          f"({', '.join(SYSTEM_PATHS)}) and not a directory holding one ({system})")


MAX_PODS = 1_000_000
"""Bound for pod counts in annotations (canary, max-unavailable): far above any Deployment."""
MAX_PROCESS_PATTERN_LENGTH = 256


def check_process_pattern(pattern: str) -> None:
    """A regular expression the agent can compile: short, and with sane repetition counts.

    re.compile raises more than re.error on hostile input: OverflowError for a repetition
    count above 2**32, RecursionError for deep nesting; the length bound keeps its work small.
    """
    accepts = (f"a regular expression (Python syntax) for the process title, at most "
               f"{MAX_PROCESS_PATTERN_LENGTH} printable characters")
    if len(pattern) > MAX_PROCESS_PATTERN_LENGTH or not _printable(pattern):
        raise _refuse(c.PROCESS, pattern, accepts)
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError, ValueError) as err:
        reason = str(err) if len(str(err)) <= _SHOWN else str(err)[:_SHOWN - 3] + "..."
        raise _refuse(c.PROCESS, pattern, f"{accepts} ({reason})") from err


def resolve(annotations: Mapping[str, str], containers: Sequence[str], policy: Policy) -> ReleaseSettings:
    """ReleaseSettings for an opted-in Deployment; raises Refusal for anything invalid."""
    release, source = _release_and_source(annotations, policy)
    container, code_path = _container_and_code_path(annotations, containers)
    restart, quiet, pattern = _process_control(annotations, policy)
    max_unavailable, canary = _pacing(annotations, policy)
    volume, storage_class = _volume_and_storage_class(annotations, policy)
    migrate = _migrate(annotations)
    return ReleaseSettings(
        release=release,
        source=source,
        container=container,
        code_path=code_path,
        restart=restart,
        pre_stop_seconds=_seconds(annotations, c.PRE_STOP_SECONDS, policy.pre_stop_seconds, 0,
                                  policy.max_pre_stop_seconds),
        max_request_seconds=_seconds(annotations, c.MAX_REQUEST_SECONDS, policy.max_request_seconds, 1,
                                     policy.max_max_request_seconds),
        max_unavailable=max_unavailable,
        canary=canary,
        volume=volume,
        storage_class=storage_class,
        paused=_bool(annotations, c.PAUSED),
        migrate=migrate,
        migrate_timeout=_seconds(annotations, c.MIGRATE_TIMEOUT, 600, 1, 86400),
        process=pattern,
        quiet_signal=quiet,
        drain_seconds=_seconds(annotations, c.DRAIN_SECONDS, c.DEFAULT_DRAIN_SECONDS, 0, 3600),
        worker_surge=_worker_surge(annotations, policy),
        traffic=_traffic(annotations),
        settle_seconds=_seconds(annotations, c.SETTLE_SECONDS, c.DEFAULT_SETTLE_SECONDS, 0, 3600),
    )


def _traffic(annotations: Mapping[str, str]) -> str:
    """live (the pod serves through its restart) or drain (it leaves the endpoints first)."""
    traffic = annotations.get(c.TRAFFIC, c.TRAFFIC_LIVE)
    if traffic not in c.TRAFFIC_MODES:
        raise _refuse(c.TRAFFIC, traffic, "live (serve through the restart, the default) or drain "
                      "(leave the Service's endpoints first, for apps that cannot phase)")
    return traffic


def _worker_surge(annotations: Mapping[str, str], policy: Policy) -> bool:
    """On by default where the policy allows it; the annotation can turn it off, not on against
    the policy (the admin bounds memory)."""
    if c.WORKER_SURGE not in annotations:
        return policy.worker_surge
    wanted = _bool(annotations, c.WORKER_SURGE)
    if wanted and not policy.worker_surge:
        raise _refuse(c.WORKER_SURGE, annotations[c.WORKER_SURGE],
                      '"false" only: the cluster policy (workerSurge) does not allow an extra worker')
    return wanted


def _release_and_source(annotations: Mapping[str, str], policy: Policy) -> tuple[str, str]:
    """The release id and the URI template it is fetched from, both required."""
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
    return release, source


def _container_and_code_path(annotations: Mapping[str, str], containers: Sequence[str]) -> tuple[str, str]:
    """The app container (the first one by default) and where the code volume is mounted in it."""
    if not containers:
        raise Refusal("the pod template has no containers")
    container = annotations.get(c.CONTAINER, containers[0])
    if container not in containers:
        raise _refuse(c.CONTAINER, container, "the name of one of the pod template's containers: "
                      + show_names(containers))
    code_path = annotations.get(c.CODE_PATH, "/app")
    check_code_path(code_path)
    return container, code_path


def _process_control(annotations: Mapping[str, str], policy: Policy) -> tuple[str, str, str | None]:
    """How the app's processes are restarted: (restart mode, quiet signal, process pattern)."""
    restart = annotations.get(c.RESTART, policy.restart)
    if not c.is_restart_mode(restart):
        raise _refuse(c.RESTART, restart, c.RESTART_ACCEPTS)
    _check_role_and_app(annotations)
    quiet = annotations.get(c.QUIET_SIGNAL, c.DEFAULT_QUIET_SIGNAL)
    if quiet not in c.SIGNAL_NAMES:
        raise _refuse(c.QUIET_SIGNAL, quiet, "a signal name: " + ", ".join(c.SIGNAL_NAMES))
    pattern = annotations.get(c.PROCESS)
    if pattern is not None:
        check_process_pattern(pattern)
    return restart, quiet, pattern


def _check_role_and_app(annotations: Mapping[str, str]) -> None:
    """Role and app are checked here but not kept: other readers take them from the annotations."""
    role = annotations.get(c.ROLE)
    if role is not None and role not in c.ROLES:
        raise _refuse(c.ROLE, role, "web, worker or cron")
    app = annotations.get(c.APP)
    if app is not None and not DNS_SUBDOMAIN.match(app):
        raise _refuse(c.APP, app, "an app name (lower-case letters, digits, '-' and '.')")


def _pacing(annotations: Mapping[str, str], policy: Policy) -> tuple[str, int]:
    """How fast a rollout goes: (max-unavailable, canary pod count)."""
    max_unavailable = annotations.get(c.MAX_UNAVAILABLE, policy.max_unavailable)
    if parse_max_unavailable(max_unavailable) is None:
        raise _refuse(c.MAX_UNAVAILABLE, max_unavailable,
                      "a whole number of pods (N >= 1) or a percentage (1% to 100%)")
    canary_raw = annotations.get(c.CANARY)
    canary = policy.canary if canary_raw is None else whole_number(canary_raw)
    if canary is None or canary > MAX_PODS:
        raise _refuse(c.CANARY, str(canary_raw), f"a whole number of pods, 0 or more (at most {MAX_PODS})")
    return max_unavailable, canary


def _volume_and_storage_class(annotations: Mapping[str, str], policy: Policy) -> tuple[str, str]:
    """The code volume's kind and the StorageClass its claim uses."""
    volume = annotations.get(c.VOLUME, policy.volume)
    if volume not in c.VOLUME_KINDS:
        raise _refuse(c.VOLUME, volume, "efs (a per-pod EFS access point) or emptyDir")
    storage_class = annotations.get(c.STORAGE_CLASS, policy.storage_class)
    if not DNS_SUBDOMAIN.match(storage_class):
        raise _refuse(c.STORAGE_CLASS, storage_class, "a StorageClass name (lower-case DNS subdomain)")
    return volume, storage_class


def _migrate(annotations: Mapping[str, str]) -> str | None:
    """The migration command, if any; a blank one is refused rather than run."""
    migrate = annotations.get(c.MIGRATE)
    if migrate is not None and not migrate.strip():
        raise _refuse(c.MIGRATE, migrate, "a shell command such as 'bin/rails db:migrate'")
    return migrate


MAX_UNKNOWN_WARNINGS = 10
"""Unknown annotations named one by one in warnings; the rest are counted in one more."""
_MATCHED_LENGTH = 2 * max(len(name) for name in c.KNOWN_ANNOTATIONS)
_KNOWN_SORTED = sorted(c.KNOWN_ANNOTATIONS)


def unknown_annotation_warnings(annotations: Mapping[str, str]) -> list[str]:
    """Warn about our-prefixed annotations we do not know, which are most often typos.

    Bounded whatever the object holds: the work per annotation is one prefix test and one set
    lookup; only the first MAX_UNKNOWN_WARNINGS (in name order) get a "did you mean" guess,
    and only when short enough to be a typo of ours.
    """
    unknown = [name for name in annotations if name.startswith(c.PREFIX) and name not in c.KNOWN_ANNOTATIONS]
    warnings = []
    for name in heapq.nsmallest(MAX_UNKNOWN_WARNINGS, unknown):
        guess = (difflib.get_close_matches(name, _KNOWN_SORTED, n=1)
                 if len(name) <= _MATCHED_LENGTH else [])
        hint = f"; did you mean {guess[0]}?" if guess else ""
        warnings.append(f"unknown annotation {show_names([name])} is ignored{hint}")
    if len(unknown) > MAX_UNKNOWN_WARNINGS:
        warnings.append(f"{len(unknown) - MAX_UNKNOWN_WARNINGS} more unknown {c.PREFIX}* annotations are "
                        "ignored")
    return warnings
