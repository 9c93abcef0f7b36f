"""The cluster-wide policy: defaults and bounds for every opted-in Deployment.

It is the ConfigMap `customer-friendly-policy`. Its data keys are camelCase (the wire names,
as Kubernetes writes keys); the fields below are their snake_case twins (`wire_name` converts),
and only `policy_from_mapping`, `policy_to_mapping` and error messages speak the wire names.
Parsing is pure and strict: an unknown key or a bad value is an error naming the key, so that a
typo in the policy never silently falls back to a default.

Three keys hold lists of Kubernetes objects (agentEnv, agentVolumes, agentVolumeMounts): what
a release source needs beyond the code volume. Only the cluster admin sets them (they can
add a hostPath), never a Deployment's annotations.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from customer_friendly.contract import (
    AGENT_ENV_PREFIX,
    CODE_VOLUME,
    RESTART_ACCEPTS,
    SOURCE_SCHEMES,
    VOLUME_KINDS,
    is_restart_mode,
)

POLICY_CONFIGMAP = "customer-friendly-policy"
INSTALL_NAMESPACE = "customer-friendly-system"

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")
# At most 7 digits: int() never meets its digit limit, and no Deployment has more pods.
_PERCENT_OR_INT = re.compile(r"([0-9]{1,7})(%?)")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The classic rule, valid on every Kubernetes version (1.34 relaxes it; older ones refuse more).
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_ENV_SOURCES = ("configMapKeyRef", "secretKeyRef", "fieldRef", "resourceFieldRef")
_MOUNT_KEYS = ("name", "mountPath", "readOnly", "subPath", "subPathExpr", "mountPropagation", "recursiveReadOnly")


class PolicyError(ValueError):
    """An invalid policy; the message names the key and what it accepts."""


@dataclass(frozen=True)
class Policy:
    """Cluster defaults; per-Deployment annotations override them within the bounds."""

    agent_image: str = "ghcr.io/customer-friendly/agent:0.1.0"
    """Image of the init container and the agent sidecar."""
    agent_image_pull_policy: str = "IfNotPresent"
    agent_port: int = 9443
    """Port of the agent's mutual-TLS API inside the pod."""
    agent_client_ca: str = ""
    """PEM of the CA that signs the controller's client certificate; the agent trusts only it."""
    agent_cpu_request: str = "10m"
    agent_memory_request: str = "32Mi"
    agent_memory_limit: str = "128Mi"

    restart: str = "phased"
    pre_stop_seconds: int = 15
    max_pre_stop_seconds: int = 120
    """Upper bound for the `pre-stop-seconds` annotation."""
    max_request_seconds: int = 30
    max_max_request_seconds: int = 3600
    """Upper bound for the `max-request-seconds` annotation."""
    grace_margin_seconds: int = 10
    """Added to preStop + the longest request to size terminationGracePeriodSeconds."""

    max_unavailable: str = "50%"
    canary: int = 1
    auto_rollback: bool = True
    """Roll pods already updated back to the previous release when a rollout fails."""
    worker_surge: bool = True
    """Phased restarts run with one Puma worker more per pod while they last (its memory, for the
    length of the restart): the pod never serves on fewer workers. false forbids it cluster-wide."""

    volume: str = "efs"
    storage_class: str = "efs-sc"
    volume_size: str = "1Gi"
    """Requested size of the per-pod EFS claim (EFS does not enforce it; the API requires one)."""
    empty_dir_size_limit: str = "2Gi"
    keep_releases: int = 3
    """Releases kept on each pod's volume for fast rollback."""

    allowed_source_prefixes: tuple[str, ...] = ()
    """Release sources must start with one of these; empty allows any s3://, https:// or file:// URI."""
    require_sha256: bool = False
    """Refuse artifacts that have no `.sha256` beside them."""

    native_sidecars: bool = True
    """The cluster is 1.29+: the agent runs as an init container with restartPolicy Always."""
    pre_stop_sleep_action: bool = True
    """The cluster is 1.30+: preStop uses the `sleep` action rather than an exec of `sleep`."""

    # The three object lists below are stored as canonical JSON text ("" when empty), not as
    # lists, so that Policy stays frozen, hashable and comparable: two policies that say the
    # same thing in different YAML/JSON spelling are equal, and `policy_to_mapping` writes
    # the text back unchanged. The constructor also accepts YAML/JSON text or a list and
    # canonicalises it; read them parsed through `agent_env_list()`, `agent_volume_list()` and
    # `agent_volume_mount_list()`, which return fresh copies.
    agent_env: str = ""
    """EnvVar objects (name, and value or valueFrom) for cfo-fetch and cfo-agent, after ours;
    names starting with CFO_ are ours and refused. For example AWS_ENDPOINT_URL_S3, AWS_REGION,
    credentials through valueFrom.secretKeyRef, or SSL_CERT_FILE for a private CA."""
    agent_volumes: str = ""
    """Volume objects added to the pod for our containers (a hostPath or nfs directory for a
    file:// source, a configMap holding a CA bundle). Names are DNS labels; cfo-code is ours."""
    agent_volume_mounts: str = ""
    """VolumeMount objects for cfo-fetch and cfo-agent; each names a volume of agentVolumes."""

    def __post_init__(self) -> None:
        volumes = _canonical(self, "agentVolumes", "a YAML or JSON list of Kubernetes Volume objects",
                             _check_volume)
        names = {volume["name"] for volume in volumes}
        _canonical(self, "agentEnv", "a YAML or JSON list of Kubernetes EnvVar objects "
                   "(name, and value or valueFrom)", _check_env)
        _canonical(self, "agentVolumeMounts", "a YAML or JSON list of Kubernetes VolumeMount objects "
                   "(name, mountPath, optionally readOnly and subPath)",
                   lambda item: _check_mount(item, names))
        _validate(self)

    def agent_env_list(self) -> list[dict[str, Any]]:
        """The parsed agentEnv (a fresh copy)."""
        return _parsed(self.agent_env)

    def agent_volume_list(self) -> list[dict[str, Any]]:
        """The parsed agentVolumes (a fresh copy)."""
        return _parsed(self.agent_volumes)

    def agent_volume_mount_list(self) -> list[dict[str, Any]]:
        """The parsed agentVolumeMounts (a fresh copy)."""
        return _parsed(self.agent_volume_mounts)


def _fail(key: str, accepts: str, value: object) -> PolicyError:
    return PolicyError(f"policy key {key}={value!r} is invalid: it accepts {accepts}")


def _parsed(text: str) -> list[dict[str, Any]]:
    return json.loads(text) if text else []


def _short(value: object, key: str) -> object:
    """A value for an error message, which is logged: shortened, and agentEnv's values hidden,
    since an admin may write a credential there."""
    if key == "agentEnv":
        if not isinstance(value, dict):
            return "<not shown: it may hold credentials>"
        value = {k: "<hidden>" if k == "value" else v for k, v in value.items()}
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _canonical(p: Policy, key: str, accepts: str,
               check: Callable[[dict[str, Any]], str | None]) -> list[dict[str, Any]]:
    """Parse one object-list key, check each item, and store its canonical JSON text on `p`."""
    raw = getattr(p, field_name(key))
    items: object = raw
    if isinstance(raw, str):
        try:
            items = yaml.safe_load(raw) if raw.strip() else []
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (YAML error at line {mark.line + 1})" if mark else ""
            raise _fail(key, accepts + where, _short(raw, key)) from err
    if items is None:
        items = []
    if not isinstance(items, list | tuple):
        raise _fail(key, accepts, _short(raw, key))
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            raise _fail(key, accepts + "; each entry is an object (a mapping)", _short(item, key))
        problem = check(item)
        if problem:
            raise _fail(key, f"{accepts}: {problem}", _short(item, key))
        ident = str(item.get("mountPath") if key == "agentVolumeMounts" else item.get("name"))
        if ident in seen:
            raise _fail(key, f"{accepts}: {ident} appears twice", _short(item, key))
        seen.add(ident)
    text = json.dumps(list(items), sort_keys=True, separators=(",", ":")) if items else ""
    object.__setattr__(p, field_name(key), text)
    return list(items)


def _check_env(env: dict[str, Any]) -> str | None:
    name = env.get("name")
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        return "name must be an environment variable name (letters, digits, '_', '-' and '.')"
    if name.startswith(AGENT_ENV_PREFIX):
        return f"names starting with {AGENT_ENV_PREFIX} are reserved for the agent's own settings"
    unknown = sorted(set(env) - {"name", "value", "valueFrom"})
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}"
    if ("value" in env) == ("valueFrom" in env):
        return f"{name} needs exactly one of value or valueFrom"
    if "value" in env and not isinstance(env["value"], str):
        return f"{name}: value must be a string (quote it)"
    source = env.get("valueFrom")
    if "valueFrom" in env:
        if not isinstance(source, dict) or len(source) != 1 or next(iter(source)) not in _ENV_SOURCES:
            return f"{name}: valueFrom holds exactly one of " + ", ".join(_ENV_SOURCES)
        kind, ref = next(iter(source.items()))
        if not isinstance(ref, dict):
            return f"{name}: valueFrom.{kind} must be an object"
        if kind in ("secretKeyRef", "configMapKeyRef") and not (
                isinstance(ref.get("name"), str) and isinstance(ref.get("key"), str)):
            return f"{name}: valueFrom.{kind} needs name and key (the object is read in the app's namespace)"
    return None


def _check_volume(volume: dict[str, Any]) -> str | None:
    name = volume.get("name")
    if not isinstance(name, str) or not DNS_LABEL.match(name):
        return "name must be a DNS label (lower-case letters, digits and '-', at most 63)"
    if name == CODE_VOLUME:
        return f"the name {CODE_VOLUME} is reserved for the code volume"
    sources = [key for key in volume if key != "name"]
    if len(sources) != 1 or not isinstance(volume[sources[0]], dict):
        return f"volume {name} needs exactly one volume source, such as hostPath, nfs, configMap or secret"
    return None


def _check_mount(mount: dict[str, Any], volumes: set[str]) -> str | None:
    name, path = mount.get("name"), mount.get("mountPath")
    if name not in volumes:
        return f"name must be one of the volumes in agentVolumes ({', '.join(sorted(volumes)) or 'none'})"
    if not isinstance(path, str) or not is_mount_path(path):
        return "mountPath must be an absolute, normalised path other than /"
    unknown = sorted(set(mount) - set(_MOUNT_KEYS))
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}; a VolumeMount accepts " + ", ".join(_MOUNT_KEYS)
    if "readOnly" in mount and not isinstance(mount["readOnly"], bool):
        return "readOnly must be true or false"
    return None


def is_mount_path(path: str) -> bool:
    """An absolute, normalised path other than `/`, such as /app or /etc/cfo/ca."""
    return path.startswith("/") and posixpath.normpath(path) == path and path != "/" and "//" not in path


def _require(ok: bool, key: str, accepts: str, value: object) -> None:
    """Raise the error for `key` unless `ok`: one line per rule keeps each validator flat."""
    if not ok:
        raise _fail(key, accepts, value)


def _validate(p: Policy) -> None:
    """Check every value; the groups run in a fixed order, so the error for a policy is stable."""
    _validate_agent(p)
    _validate_quantities(p)
    _validate_restart(p)
    _validate_rollout(p)
    _validate_volume(p)
    _validate_sources(p)


def _validate_agent(p: Policy) -> None:
    """The agent container's image, pull policy, port and client CA."""
    _require(bool(p.agent_image), "agentImage", "a container image reference", p.agent_image)
    _require(p.agent_image_pull_policy in ("Always", "IfNotPresent", "Never"), "agentImagePullPolicy",
             "Always, IfNotPresent or Never", p.agent_image_pull_policy)
    _require(1 <= p.agent_port <= 65535, "agentPort", "a port number from 1 to 65535", p.agent_port)
    _require(not p.agent_client_ca or "BEGIN CERTIFICATE" in p.agent_client_ca, "agentClientCA",
             "a PEM certificate bundle", "<not PEM>")


def _is_quantity(key: str, value: str) -> bool:
    """A Kubernetes quantity; agentCpuRequest alone also takes millicores (such as 10m)."""
    return bool(_QUANTITY.match(value)) or (key == "agentCpuRequest" and bool(re.match(r"^[0-9]+m$", value)))


def _validate_quantities(p: Policy) -> None:
    """Resource requests, limits and volume sizes, in one loop since they share a message."""
    for key in ("agentCpuRequest", "agentMemoryRequest", "agentMemoryLimit", "volumeSize", "emptyDirSizeLimit"):
        value = getattr(p, field_name(key))
        _require(_is_quantity(key, value), key, "a Kubernetes quantity such as 64Mi or 1Gi", value)


def _validate_restart(p: Policy) -> None:
    """The restart mode and its timing bounds; each default must lie within its own bound."""
    _require(is_restart_mode(p.restart), "restart", RESTART_ACCEPTS, p.restart)
    _require(0 <= p.max_pre_stop_seconds <= 3600, "maxPreStopSeconds", "whole seconds from 0 to 3600",
             p.max_pre_stop_seconds)
    _require(0 <= p.pre_stop_seconds <= p.max_pre_stop_seconds, "preStopSeconds",
             f"whole seconds from 0 to maxPreStopSeconds ({p.max_pre_stop_seconds})", p.pre_stop_seconds)
    _require(1 <= p.max_max_request_seconds <= 86400, "maxMaxRequestSeconds", "whole seconds from 1 to 86400",
             p.max_max_request_seconds)
    _require(1 <= p.max_request_seconds <= p.max_max_request_seconds, "maxRequestSeconds",
             f"whole seconds from 1 to maxMaxRequestSeconds ({p.max_max_request_seconds})",
             p.max_request_seconds)
    _require(0 <= p.grace_margin_seconds <= 600, "graceMarginSeconds", "whole seconds from 0 to 600",
             p.grace_margin_seconds)


def _validate_rollout(p: Policy) -> None:
    """How many pods a rollout takes down at once, and how many go first."""
    _require(parse_max_unavailable(p.max_unavailable) is not None, "maxUnavailable",
             "a whole number of pods (N >= 1) or a percentage (1% to 100%)", p.max_unavailable)
    _require(p.canary >= 0, "canary", "a whole number of pods, 0 or more", p.canary)


def _validate_volume(p: Policy) -> None:
    """The code volume: its kind, storage class and how many releases it keeps."""
    _require(p.volume in VOLUME_KINDS, "volume", " or ".join(VOLUME_KINDS), p.volume)
    _require(bool(DNS_SUBDOMAIN.match(p.storage_class)), "storageClass",
             "a StorageClass name (lower-case DNS subdomain)", p.storage_class)
    _require(1 <= p.keep_releases <= 50, "keepReleases", "a whole number from 1 to 50", p.keep_releases)


def _validate_sources(p: Policy) -> None:
    """Each allowed source prefix starts with a release source scheme (s3://, https:// or file://)."""
    for prefix in p.allowed_source_prefixes:
        _require(prefix.startswith(SOURCE_SCHEMES), "allowedSourcePrefixes",
                 "URI prefixes starting with " + ", ".join(SOURCE_SCHEMES), prefix)


def parse_max_unavailable(value: str) -> tuple[int, bool] | None:
    """`N` or `N%` as (number, is_percent), or None when it is neither (or out of range)."""
    match = _PERCENT_OR_INT.fullmatch(value.strip())
    if not match:
        return None
    number, percent = int(match.group(1)), bool(match.group(2))
    if number < 1 or (percent and number > 100):
        return None
    return number, percent


def wire_name(field: str) -> str:
    """A Policy field's ConfigMap key: snake_case to camelCase (agent_client_ca is agentClientCA)."""
    head, *rest = field.split("_")
    return "agentClientCA" if field == "agent_client_ca" else head + "".join(part.capitalize() for part in rest)


_FIELDS = {wire_name(f.name): f for f in fields(Policy)}
"""ConfigMap key -> field."""
_OBJECT_LISTS = ("agentEnv", "agentVolumes", "agentVolumeMounts")


def field_name(key: str) -> str:
    """A ConfigMap key's Policy field (the inverse of wire_name)."""
    return _FIELDS[key].name


def _coerce(key: str, raw: str, kind: object) -> object:
    text = raw.strip()
    if kind in (int, "int"):
        if not re.fullmatch(r"-?[0-9]{1,18}", text):
            raise _fail(key, "a whole number", raw)
        return int(text)
    if kind in (bool, "bool"):
        if text.lower() not in ("true", "false"):
            raise _fail(key, '"true" or "false"', raw)
        return text.lower() == "true"
    if kind in (tuple[str, ...], "tuple[str, ...]"):
        # A YAML/JSON list, or one prefix per line / comma separated.
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as err:
                raise _fail(key, "a JSON list of strings, or one entry per line", raw) from err
        else:
            items = [part for line in text.splitlines() for part in line.split(",")]
        return tuple(str(item).strip() for item in items if str(item).strip())
    return raw if key == "agentClientCA" else text


def policy_from_mapping(data: Mapping[str, object]) -> Policy:
    """Build a Policy from ConfigMap data; unknown keys are refused, so typos are caught."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise PolicyError(f"unknown policy key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(_FIELDS))}")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        kind = _FIELDS[key].type
        if key in _OBJECT_LISTS:
            values[field_name(key)] = raw  # text, or a list from a YAML policy file: Policy parses both
        elif isinstance(raw, bool | int) and kind in (int, bool, "int", "bool"):
            values[field_name(key)] = raw
        elif isinstance(raw, list):
            values[field_name(key)] = tuple(str(item) for item in raw)
        else:
            values[field_name(key)] = _coerce(key, str(raw), kind)
    return Policy(**values)


def policy_to_mapping(policy: Policy) -> dict[str, str]:
    """The ConfigMap data form of a policy (the inverse of `policy_from_mapping`)."""
    out: dict[str, str] = {}
    for key, spec in _FIELDS.items():
        value = getattr(policy, spec.name)
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, tuple):
            out[key] = "\n".join(value)
        else:
            out[key] = str(value)
    return out


def read_policy_path(path: Path) -> Policy:
    """A mounted ConfigMap (a directory, one file per key) or a YAML file of the data map."""
    if path.is_dir():
        data = {
            entry.name: entry.read_text()
            for entry in sorted(path.iterdir())
            if not entry.name.startswith(".") and entry.is_file()
        }
    else:
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise PolicyError(f"{path}: the policy file must be a mapping of keys to values")
        # Accept a whole ConfigMap manifest as well as its bare data map.
        data = loaded.get("data", loaded) if loaded.get("kind") == "ConfigMap" else loaded
    return policy_from_mapping(data)


def replace(policy: Policy, **changes: Any) -> Policy:
    return dataclasses.replace(policy, **changes)
