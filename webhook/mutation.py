"""The mutation: a Deployment in, the same Deployment prepared for in-place releases out.

Pure and idempotent: it edits a deep copy, recognises what it injected before by name
(see `contract`) and replaces it rather than adding it twice, so mutating its own output
changes nothing. The JSON patch is computed from the difference elsewhere (`review`).

Values that must never change when only the release changes (which would start a native
rollout and replace every pod) are pinned at first injection: the fallback release and
source. The live values come from the release ConfigMap that the controller maintains.

Our names (cfo-fetch, cfo-agent, cfo-code) are reserved. A pod template counts as our earlier
output only when it carries the `injected` annotation; anything else using those names is
refused. That annotation is the user's to forge, so it only decides what we replace, never
what we trust: the pinned values read back from an earlier cfo-fetch are validated against the
policy like any annotation, and re-pinned from the annotations when they fail.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from customer_friendly import contract as c
from customer_friendly.contract.agent_api import AgentEnv
from customer_friendly.contract.objects import Obj
from customer_friendly.contract.policy import Policy
from customer_friendly.contract.readiness import health_url
from customer_friendly.contract.settings import Refusal, ReleaseSettings, check_source, show, show_names

MAX_PRE_STOP_SLEEP = 86400
"""A user's own preStop sleep above this (a day) is refused: it would also size the grace period."""
_MAX_RECORDED = 2**31 - 1
_MAX_INJECTED_TEXT = 65536  # what we write is a few hundred bytes (and a name per agent volume)


@dataclass(frozen=True)
class Injected:
    """What the previous mutation chose, recorded on the pod template.

    The `*_base` fields are the user's own values as we first found them, so that ours can
    be lowered again later without ever going below what the user asked for. `volumes` names
    the pod volumes that the policy's agentVolumes added, so that a later mutation replaces
    or removes them and never mistakes a user's volume of the same name for ours.
    """

    pre_stop_seconds: int | None = None
    pre_stop_base: int | None = None
    grace_seconds: int | None = None
    grace_base: int | None = None
    volumes: tuple[str, ...] = ()

    def to_annotation(self) -> str:
        data: Obj = {"preStopSeconds": self.pre_stop_seconds, "preStopBase": self.pre_stop_base,
                     "terminationGracePeriodSeconds": self.grace_seconds, "graceBase": self.grace_base}
        if self.volumes:
            # Only when there are any: the annotation of every other Deployment stays as it was,
            # since a changed pod template would start a native rollout.
            data["agentVolumes"] = list(self.volumes)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_annotation(cls, text: object) -> Injected:
        """What an earlier mutation recorded; anything malformed or out of range reads as absent.

        The pod template is the user's, so this text may be forged: it can only make us treat
        a value as the user's own, and every value we write is bounded by the settings anyway.
        """
        try:
            data = json.loads(text) if isinstance(text, str) and len(text) <= _MAX_INJECTED_TEXT else {}
        except (ValueError, RecursionError):  # ValueError: also int()'s digit limit
            data = {}
        if not isinstance(data, dict):
            data = {}
        ints = {k: v if type(v) is int and 0 <= v <= _MAX_RECORDED else None for k, v in data.items()}
        volumes = data.get("agentVolumes")
        names = tuple(v for v in volumes if isinstance(v, str)) if isinstance(volumes, list) else ()
        return cls(ints.get("preStopSeconds"), ints.get("preStopBase"),
                   ints.get("terminationGracePeriodSeconds"), ints.get("graceBase"), names)


def _floor(current: int | None, ours_before: int | None, base_before: int | None,
           wanted: int) -> tuple[int, int | None]:
    """(value, user's base) for a setting we may raise but must never push below the user's.

    A current value equal to what we set last time is ours; anything else is the user's and
    becomes the new floor.
    """
    base = base_before if current is not None and current == ours_before else current
    return max(wanted, base if base is not None else 0), base


def whole_seconds(value: object, field: str, high: int | None = None) -> int:
    """A pod-spec count of seconds as an int: 30 and 30.0 alike; refused when not whole.

    The API server sends ints, but the mutation must be a function of the value, not of its
    JSON spelling: a float kept as it is would never equal what we record, and a bool is an
    int to Python but not to Kubernetes.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**63:
        value = int(value)
    if type(value) is not int or value < 0 or (high is not None and value > high):
        bound = f"from 0 to {high}" if high is not None else "0 or more"
        raise Refusal(f"{field}={show(value)} is invalid: it accepts whole seconds {bound}")
    return value


def _sleep_seconds(pre_stop: object, container: str) -> int | None:
    """Seconds of a sleep-only preStop (the action or an exec of `sleep N`), else None.

    An exec of sleep whose argument is not a plain number (`10s`, `1.5`) is the user's own
    hook; a number we cannot read as one (non-ASCII digits such as '²', which str.isdigit
    accepts and int() and sleep refuse, or a huge one) is refused.
    """
    if not isinstance(pre_stop, dict) or len(pre_stop) != 1:
        return None
    field = f"container {container}: lifecycle.preStop"
    if "sleep" in pre_stop:
        sleep = pre_stop["sleep"]
        if not isinstance(sleep, dict) or "seconds" not in sleep:
            return None
        return whole_seconds(sleep["seconds"], f"{field}.sleep.seconds", MAX_PRE_STOP_SLEEP)
    command = pre_stop["exec"].get("command") if isinstance(pre_stop.get("exec"), dict) else None
    if not (isinstance(command, list) and len(command) == 2 and command[0] in ("sleep", "/bin/sleep")
            and isinstance(command[1], str)):
        return None
    argument = command[1]
    if not argument.isdigit():
        return None
    if argument.isascii() and len(argument) <= len(str(MAX_PRE_STOP_SLEEP)) \
            and int(argument) <= MAX_PRE_STOP_SLEEP:
        return int(argument)
    raise Refusal(f"{field}.exec.command={show(command)} is invalid: it accepts sleep with whole seconds "
                  f"from 0 to {MAX_PRE_STOP_SLEEP} in ASCII digits")


def _pre_stop_hook(seconds: int, policy: Policy) -> Obj:
    if policy.pre_stop_sleep_action:
        return {"sleep": {"seconds": seconds}}
    return {"exec": {"command": ["sleep", str(seconds)]}}


def _replace_or_append(items: list[Obj], item: Obj, key: str = "name") -> list[Obj]:
    out = [item if existing.get(key) == item[key] else existing for existing in items]
    if not any(existing.get(key) == item[key] for existing in items):
        out.append(item)
    return out


def _env_value(container: Obj | None, name: str) -> object:
    env = (container or {}).get("env")
    for item in env if isinstance(env, list) else []:
        if isinstance(item, dict) and item.get("name") == name and "value" in item:
            return item["value"]
    return None


def _pinned_fallback(previous_fetch: Obj | None, settings: ReleaseSettings,
                     policy: Policy) -> tuple[str, str, str | None]:
    """(release, source, warning or None): the fallback pinned by our earlier cfo-fetch, re-validated.

    Read back from the pod template, so as untrusted as an annotation: a pair that the release-id
    rule or the policy's source rules refuse (forged, or pinned before the policy tightened) is
    re-pinned from the annotations, which `resolve` has just validated.
    """
    release = _env_value(previous_fetch, AgentEnv.RELEASE_DEFAULT)
    source = _env_value(previous_fetch, AgentEnv.SOURCE_DEFAULT)
    if release is None and source is None:
        return settings.release, settings.source, None
    release = settings.release if release is None else release
    source = settings.source if source is None else source
    problem = None
    if not isinstance(release, str) or not c.is_release_id(release):
        problem = f"its release {show(release)} is not a release id matching {c.RELEASE_ID_PATTERN}"
    elif not isinstance(source, str):
        problem = f"its source {show(source)} is not a string"
    else:
        try:
            check_source(source, policy, annotation=AgentEnv.SOURCE_DEFAULT)
        except Refusal as refusal:
            problem = str(refusal)
    if problem is None and isinstance(release, str) and isinstance(source, str):
        return release, source, None
    return settings.release, settings.source, (
        f"the fallback release pinned in init container {c.FETCH_CONTAINER} ({AgentEnv.RELEASE_DEFAULT}, "
        f"{AgentEnv.SOURCE_DEFAULT}) is not used: {problem}; it is pinned again from annotations {c.RELEASE} and "
        f"{c.SOURCE}, which changes the pod template and so replaces the pods")


def _named_objects(pod: Obj, key: str) -> list[Obj]:
    """pod[key] as a list of objects that each have a name; refused otherwise."""
    items = pod.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise Refusal(f"spec.template.spec.{key} must be a list")
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            what = "container" if key != "volumes" else "volume"
            raise Refusal(f"spec.template.spec.{key}[{index}] has no name: every {what} needs a name "
                          "(lower-case letters, digits and '-')")
    return items


def _reserved_refusal(what: str, name: str, where: str) -> Refusal:
    return Refusal(f"the pod template has {what} named {name} in {where}: the name {name} is reserved for "
                   "what customer-friendly.dev injects (cfo-fetch, cfo-agent, cfo-code); rename yours")


def check_template(deployment: Obj) -> list[str]:
    """The names of the user's containers, once the pod template is fit to be mutated.

    Refuses containers or volumes without a name, and our reserved names used by anyone but us:
    only a template carrying our `injected` annotation may hold them, and then only where we
    put them (one cfo-fetch among the init containers, one cfo-agent among the init containers
    or the containers, one cfo-code volume of the kinds we create), so nothing of the user's
    is ever duplicated or silently dropped.
    """
    template = ((deployment.get("spec") or {}).get("template") or {})
    if not isinstance(template, dict) or not isinstance(template.get("spec") or {}, dict):
        raise Refusal("spec.template.spec must be an object")
    pod = template.get("spec") or {}
    metadata = template.get("metadata") or {}
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    ours = isinstance(annotations, dict) and c.INJECTED in annotations
    containers = _named_objects(pod, "containers")
    inits = _named_objects(pod, "initContainers")
    volumes = _named_objects(pod, "volumes")
    reserved = (c.FETCH_CONTAINER, c.AGENT_CONTAINER)
    for where, items in (("spec.template.spec.containers", containers),
                         ("spec.template.spec.initContainers", inits)):
        for item in items:
            if item["name"] in reserved and not ours:
                raise _reserved_refusal("a container", item["name"], where)
    if ours:
        if any(ct["name"] == c.FETCH_CONTAINER for ct in containers):
            raise _reserved_refusal("a container", c.FETCH_CONTAINER, "spec.template.spec.containers")
        for name in reserved:
            if [ct["name"] for ct in containers + inits].count(name) > 1:
                raise _reserved_refusal("more than one container", name, "spec.template.spec")
    code = [volume for volume in volumes if volume["name"] == c.CODE_VOLUME]
    if code and (not ours or len(code) > 1 or not ("ephemeral" in code[0] or "emptyDir" in code[0])):
        raise Refusal(f"the pod template already has a volume named {c.CODE_VOLUME}, a name reserved for "
                      "the code volume that customer-friendly.dev injects: rename it")
    return [ct["name"] for ct in containers if ct["name"] not in reserved]


def code_volume(settings: ReleaseSettings, policy: Policy) -> Obj:
    if settings.volume == "emptyDir":
        return {"name": c.CODE_VOLUME, "emptyDir": {"sizeLimit": policy.empty_dir_size_limit}}
    return {
        "name": c.CODE_VOLUME,
        "ephemeral": {
            "volumeClaimTemplate": {
                "metadata": {"labels": {"app.kubernetes.io/managed-by": "customer-friendly-operator"}},
                "spec": {
                    # One EFS access point per pod: the claim lives and dies with the pod.
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": settings.storage_class,
                    "resources": {"requests": {"storage": policy.volume_size}},
                },
            }
        },
    }


def agent_env(deployment_name: str, settings: ReleaseSettings, policy: Policy,
              fallback_release: str, fallback_source: str, app_container: str, health: str | None = None) -> list[Obj]:
    """The agent's configuration; names match `cfo-agent --help`."""
    cm = c.release_configmap_name(deployment_name)

    def from_cm(key: str) -> Obj:
        return {"configMapKeyRef": {"name": cm, "key": key, "optional": True}}

    env: list[Obj] = [
        {"name": AgentEnv.RELEASE, "valueFrom": from_cm(c.RELEASE_CONFIGMAP_KEY)},
        {"name": AgentEnv.RELEASE_DEFAULT, "value": fallback_release},
        {"name": AgentEnv.SOURCE, "valueFrom": from_cm("source")},
        {"name": AgentEnv.SOURCE_DEFAULT, "value": fallback_source},
        {"name": AgentEnv.CODE_PATH, "value": settings.code_path},
        {"name": AgentEnv.APP_CONTAINER, "value": app_container},
        {"name": AgentEnv.KEEP_RELEASES, "value": str(policy.keep_releases)},
        {"name": AgentEnv.REQUIRE_SHA256, "value": "true" if policy.require_sha256 else "false"},
        {"name": AgentEnv.AGENT_PORT, "value": str(policy.agent_port)},
        {"name": AgentEnv.POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": AgentEnv.POD_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if policy.agent_client_ca:
        env.append({"name": AgentEnv.CLIENT_CA, "value": policy.agent_client_ca})
    if health and settings.drains_traffic:
        env.append({"name": AgentEnv.HEALTH_URL, "value": health})
    return env


_NO_RUN_AS_USER_REFUSAL = (
    "container {name} sets runAsNonRoot but no runAsUser: the agent must run as Puma's uid to signal "
    "it; set securityContext.runAsUser (the uid of the image's USER)"
)
_ROOT_AGENT_WARNING = (
    "container {name} sets no runAsUser: the agent runs as root with only CAP_KILL so it can signal "
    "Puma; set runAsUser (and runAsNonRoot) to run it unprivileged, as PodSecurity restricted requires"
)


def _effective(key: str, app: Obj, pod: Obj) -> Any:
    """A securityContext setting as the kubelet applies it: the container's, else the pod's."""
    value = (app.get("securityContext") or {}).get(key)
    return value if value is not None else (pod.get("securityContext") or {}).get(key)


def agent_security_contexts(app: Obj, pod: Obj) -> tuple[Obj, Obj, str | None]:
    """(cfo-agent's securityContext, cfo-fetch's, a warning or None): least privilege that works.

    Signalling another container's process needs the same uid, or CAP_KILL. Kubernetes sets
    no ambient capabilities, so a capability added to a non-root container stays in its
    bounding set and is never effective: CAP_KILL works only for root. Hence:
    - Puma's uid known (container or pod level): both run as it, with no capability at all;
    - unknown and runAsNonRoot: nothing unprivileged can signal an unknown uid and root is
      forbidden, so the Deployment is refused now rather than failing at its first release;
    - unknown otherwise: root with CAP_KILL only for the agent, and a warning. cfo-fetch runs
      as the same uid (the agent prunes what it wrote) but needs no capability.
    Derived only from the app container and the pod, which the mutation never changes, so
    it is the same on every mutation.
    """
    uid, gid = _effective("runAsUser", app, pod), _effective("runAsGroup", app, pod)
    base: Obj = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                 "seccompProfile": {"type": "RuntimeDefault"}}
    warning = None
    if uid is None:
        if _effective("runAsNonRoot", app, pod) is True:
            raise Refusal(_NO_RUN_AS_USER_REFUSAL.format(name=app["name"]))
        uid, warning = 0, _ROOT_AGENT_WARNING.format(name=app["name"])
    base["runAsUser"] = uid
    if gid is not None:
        base["runAsGroup"] = gid
    base["runAsNonRoot"] = uid != 0
    fetch = {**base, "capabilities": {"drop": ["ALL"]}}
    agent = {**base, "capabilities": {"drop": ["ALL"], "add": ["KILL"]} if warning else {"drop": ["ALL"]}}
    return agent, fetch, warning


def _agent_container(name: str, mode: str, env: list[Obj], mounts: list[Obj], policy: Policy,
                     security_context: Obj) -> Obj:
    container: Obj = {
        "name": name,
        "image": policy.agent_image,
        "imagePullPolicy": policy.agent_image_pull_policy,
        "args": [mode],
        "env": copy.deepcopy(env),
        "volumeMounts": copy.deepcopy(mounts),
        "resources": {
            "requests": {"cpu": policy.agent_cpu_request, "memory": policy.agent_memory_request},
            "limits": {"memory": policy.agent_memory_limit},
        },
        "securityContext": copy.deepcopy(security_context),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if mode == "serve":
        container["ports"] = [{"name": c.AGENT_PORT_NAME, "containerPort": policy.agent_port,
                               "protocol": "TCP"}]
        container["readinessProbe"] = {
            "httpGet": {"path": "/healthz", "port": c.AGENT_PORT_NAME, "scheme": "HTTPS"},
            "periodSeconds": 10,
        }
    return container


def _mount_code(app: Obj, settings: ReleaseSettings) -> Obj:
    mounts = [m for m in app.get("volumeMounts") or [] if m.get("name") != c.CODE_VOLUME]
    for mount in mounts:
        if mount.get("mountPath") == settings.code_path:
            raise Refusal(
                f"container {app['name']} already mounts volume {mount.get('name')} at "
                f"{settings.code_path}, where the code volume must go: set annotation "
                f"{c.CODE_PATH} to another path or remove that mount"
            )
    app["volumeMounts"] = [*mounts, {"name": c.CODE_VOLUME, "mountPath": settings.code_path}]
    return app


def _policy_volumes(volumes: list[Obj], policy: Policy,
                    ours_before: tuple[str, ...]) -> tuple[list[Obj], tuple[str, ...]]:
    """The pod's volumes with the policy's agentVolumes, and the names that are ours now.

    A volume we added earlier (recorded in the injected annotation) is replaced, or removed
    when the policy no longer has it. A user's volume of the same name is kept when it is
    the very same volume and refused otherwise: we must not mount the user's data into the
    agent, nor drop it from their pod.
    """
    wanted = policy.agent_volume_list()
    wanted_names = {volume["name"] for volume in wanted}
    out = [v for v in volumes if v.get("name") not in ours_before or v.get("name") in wanted_names]
    ours: list[str] = []
    for volume in wanted:
        existing = next((v for v in out if v.get("name") == volume["name"]), None)
        if existing is not None and volume["name"] not in ours_before:
            if existing != volume:
                raise Refusal(
                    f"the pod template already has a volume named {volume['name']}, a name the cluster "
                    "policy (agentVolumes) uses for a volume of the agent: rename yours"
                )
            continue  # the user's own identical volume: kept as theirs, and mounted as it is
        out = _replace_or_append(out, volume)
        ours.append(volume["name"])
    return out, tuple(ours)


def _check_policy_mounts(mounts: list[Obj], code_path: str) -> None:
    """The policy's mounts must not overlap the code volume, whose path each Deployment chooses.

    Under it they would hide releases; above it the code volume would be mounted inside
    them (creating a directory in a hostPath on the node, or failing on a read-only one).
    """
    for mount in mounts:
        path = mount["mountPath"]
        if path == code_path or path.startswith(code_path + "/") or code_path.startswith(path + "/"):
            raise Refusal(
                f"the cluster policy (agentVolumeMounts) mounts volume {mount['name']} at {path}, which "
                f"overlaps the code path {code_path}: set annotation {c.CODE_PATH} to a path that neither "
                f"contains {path} nor lies inside it, or ask the cluster admin to move that mount"
            )


def mutate(deployment: Obj, settings: ReleaseSettings, policy: Policy) -> tuple[Obj, list[str]]:
    """Return a prepared copy of an opted-in Deployment and the warnings for the user.

    Only what it changes is copied (the path down to the pod spec, its lists, and the app
    container); everything else is shared with the input, which is never modified. A deep copy
    of an object near the 7 MiB cap takes a second, and shared parts also make the patch cheap
    to compute (`review.json_patch` skips what is identical).
    """
    out = dict(deployment)
    warnings: list[str] = []
    metadata: Obj = out["metadata"] if isinstance(out.get("metadata"), dict) else {}
    name = metadata.get("name") or metadata.get("generateName") or ""
    spec = out["spec"] = dict(out.get("spec") or {})
    template = spec["template"] = dict(spec.get("template") or {})
    template_meta = template["metadata"] = dict(template.get("metadata") or {})
    template_annotations = template_meta["annotations"] = dict(template_meta.get("annotations") or {})
    pod = template["spec"] = dict(template.get("spec") or {})
    injected = Injected.from_annotation(template_annotations.get(c.INJECTED))
    if settings.container not in check_template(out):
        raise Refusal(f"annotation {c.CONTAINER}={show(settings.container)} is invalid: it accepts the name "
                      "of one of the pod template's containers: " + show_names(check_template(out)))

    if pod.get("shareProcessNamespace") is False:
        warnings.append("shareProcessNamespace was false; it is set to true so that the agent can "
                        "signal Puma")
    pod["shareProcessNamespace"] = True
    _set_readiness_gate(pod, settings)
    volumes = _replace_or_append(pod.get("volumes") or [], code_volume(settings, policy))
    pod["volumes"], policy_volumes = _policy_volumes(volumes, policy, injected.volumes)
    policy_mounts = policy.agent_volume_mount_list()
    _check_policy_mounts(policy_mounts, settings.code_path)

    containers = [ct for ct in pod.get("containers") or [] if ct.get("name") != c.AGENT_CONTAINER]
    index = next(i for i, ct in enumerate(containers) if ct.get("name") == settings.container)
    app = containers[index] = dict(containers[index])
    agent_context, fetch_context, privilege_warning = agent_security_contexts(app, pod)
    _mount_code(app, settings)

    pre_stop, pre_stop_base, effective_pre_stop, hook_warning = _set_pre_stop(app, settings, policy, injected)
    if hook_warning:
        warnings.append(hook_warning)

    wanted_grace = effective_pre_stop + settings.max_request_seconds + policy.grace_margin_seconds
    current_grace = pod.get("terminationGracePeriodSeconds")
    if current_grace is not None:
        current_grace = whole_seconds(current_grace, "spec.template.spec.terminationGracePeriodSeconds")
    grace, grace_base = _floor(current_grace, injected.grace_seconds, injected.grace_base, wanted_grace)
    pod["terminationGracePeriodSeconds"] = grace

    # The fallback release/source are pinned when first injected: see the module docstring.
    # check_template has made sure that a cfo-fetch here is in a template we mutated before.
    previous_fetch = next((ct for ct in pod.get("initContainers") or [] if ct.get("name") == c.FETCH_CONTAINER),
                          None)
    fallback_release, fallback_source, fallback_warning = _pinned_fallback(previous_fetch, settings, policy)
    if fallback_warning:
        warnings.append(fallback_warning)
    # The policy's variables come after ours, which they may not name (CFO_*).
    env = agent_env(name, settings, policy, fallback_release, fallback_source, app["name"],
                    health_url(app)) + policy.agent_env_list()
    mounts = [{"name": c.CODE_VOLUME, "mountPath": settings.code_path}, *policy_mounts]
    fetch = _agent_container(c.FETCH_CONTAINER, "fetch", env, mounts, policy, fetch_context)
    agent = _agent_container(c.AGENT_CONTAINER, "serve", env, mounts, policy, agent_context)

    user_inits = [ct for ct in pod.get("initContainers") or []
                  if ct.get("name") not in (c.FETCH_CONTAINER, c.AGENT_CONTAINER)]
    if policy.native_sidecars:
        agent["restartPolicy"] = "Always"
        # Ours first: the user's init containers (asset builds, checks) may need the code.
        pod["initContainers"] = [fetch, agent, *user_inits]
    else:
        pod["initContainers"] = [fetch, *user_inits]
        containers.append(agent)
    pod["containers"] = containers

    template_annotations[c.INJECTED] = Injected(pre_stop, pre_stop_base, grace, grace_base,
                                                policy_volumes).to_annotation()
    warnings += _advice(out, app)
    if privilege_warning:
        warnings.append(privilege_warning)
    return out, warnings


def _set_readiness_gate(pod: Obj, settings: ReleaseSettings) -> None:
    """traffic: drain needs a readiness gate the controller can close before a restart; live
    traffic must not have one (a pod would wait for a condition no one sets). The user's own
    gates are kept as they are."""
    gates = [gate for gate in pod.get("readinessGates") or []
             if not (isinstance(gate, dict) and gate.get("conditionType") == c.IN_PLACE_READY)]
    if settings.drains_traffic:
        gates.append({"conditionType": c.IN_PLACE_READY})
    if gates:
        pod["readinessGates"] = gates
    else:
        pod.pop("readinessGates", None)


def _set_pre_stop(app: Obj, settings: ReleaseSettings, policy: Policy,
                  injected: Injected) -> tuple[int | None, int | None, int, str | None]:
    """Give the app container its preStop sleep (in place); returns what to record as injected
    (seconds, base), the wait that sizes the grace period, and a warning.

    Ours is a plain sleep; any other hook is the user's and is kept as it is.
    """
    lifecycle = app["lifecycle"] = dict(app.get("lifecycle") or {})
    current_sleep = _sleep_seconds(lifecycle.get("preStop"), app["name"])
    if lifecycle.get("preStop") and current_sleep is None:
        return None, None, settings.pre_stop_seconds, (
            f"container {app['name']} has its own preStop hook, which is kept: make sure it waits at "
            f"least {settings.pre_stop_seconds}s before Puma gets SIGTERM")
    pre_stop, pre_stop_base = _floor(current_sleep, injected.pre_stop_seconds,
                                     injected.pre_stop_base, settings.pre_stop_seconds)
    if pre_stop == pre_stop_base == current_sleep:
        pass  # the user's own sleep already waits long enough: keep it exactly as written
    elif pre_stop > 0:
        lifecycle["preStop"] = _pre_stop_hook(pre_stop, policy)
    else:
        lifecycle.pop("preStop", None)
    if not lifecycle:
        app.pop("lifecycle")
    return pre_stop, pre_stop_base, pre_stop, None


def _advice(deployment: Obj, app: Obj) -> list[str]:
    """Warnings for specs that work but put requests at risk."""
    advice = []
    if not app.get("readinessProbe"):
        advice.append(f"container {app['name']} has no readinessProbe: new pods will get traffic before "
                      "Puma listens")
    if (deployment.get("spec", {}).get("strategy") or {}).get("type") == "Recreate":
        advice.append("strategy Recreate stops every pod at once on an image change; in-place releases "
                      "are unaffected, but consider RollingUpdate")
    return advice
