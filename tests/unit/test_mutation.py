"""The pure mutation, table-driven from JSON fixtures. No mocks: it is template in, template out."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from customer_friendly import contract as c
from customer_friendly.contract.policy import Policy, policy_from_mapping
from customer_friendly.contract.settings import Refusal, resolve, unknown_annotation_warnings
from customer_friendly.webhook.mutation import mutate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BASE = json.loads((FIXTURES / "deployment.json").read_text())
RESPECTED = json.loads((FIXTURES / "respected.json").read_text())


def deployment(**annotations: str | None) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    for key, value in annotations.items():
        name = c.PREFIX + key.replace("_", "-")
        if value is None:
            obj["metadata"]["annotations"].pop(name, None)
        else:
            obj["metadata"]["annotations"][name] = value
    return obj


def run(obj: dict[str, Any], policy: Policy | None = None) -> tuple[dict[str, Any], list[str]]:
    policy = policy or Policy()
    containers = [ct["name"] for ct in obj["spec"]["template"]["spec"]["containers"]
                  if ct["name"] != c.AGENT_CONTAINER]
    settings = resolve(obj["metadata"]["annotations"], containers, policy)
    return mutate(obj, settings, policy)


def pod(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in items if item["name"] == name)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --- each injected piece ----------------------------------------------------------------

def test_the_pod_shares_its_process_namespace_so_the_agent_can_signal_puma() -> None:
    assert pod(run(deployment())[0])["shareProcessNamespace"] is True


def test_the_code_volume_is_a_per_pod_efs_claim_by_default() -> None:
    volume = named(pod(run(deployment())[0])["volumes"], c.CODE_VOLUME)
    spec = volume["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert spec["storageClassName"] == "efs-sc"
    assert spec["resources"]["requests"]["storage"] == "1Gi"


def test_the_storage_class_annotation_chooses_the_efs_class() -> None:
    volume = named(pod(run(deployment(storage_class="efs-fast"))[0])["volumes"], c.CODE_VOLUME)
    assert volume["ephemeral"]["volumeClaimTemplate"]["spec"]["storageClassName"] == "efs-fast"


def test_the_volume_annotation_can_choose_empty_dir() -> None:
    volume = named(pod(run(deployment(volume="emptyDir"))[0])["volumes"], c.CODE_VOLUME)
    assert volume == {"name": c.CODE_VOLUME, "emptyDir": {"sizeLimit": "2Gi"}}


def test_the_policy_can_make_empty_dir_the_default() -> None:
    volume = named(pod(run(deployment(), Policy(volume="emptyDir"))[0])["volumes"], c.CODE_VOLUME)
    assert "emptyDir" in volume


def test_fetch_and_the_native_sidecar_agent_run_before_the_users_init_containers() -> None:
    inits = pod(run(deployment())[0])["initContainers"]
    assert [i["name"] for i in inits] == [c.FETCH_CONTAINER, c.AGENT_CONTAINER, "wait-for-db"]
    assert inits[0]["args"] == ["fetch"] and "restartPolicy" not in inits[0]
    assert inits[1]["args"] == ["serve"] and inits[1]["restartPolicy"] == "Always"
    assert inits[1]["ports"] == [{"name": "cfo-agent", "containerPort": 9443, "protocol": "TCP"}]


def test_on_clusters_without_native_sidecars_the_agent_is_a_plain_container() -> None:
    out = pod(run(deployment(), Policy(native_sidecars=False))[0])
    assert [i["name"] for i in out["initContainers"]] == [c.FETCH_CONTAINER, "wait-for-db"]
    assert [ct["name"] for ct in out["containers"]] == ["puma", "log-shipper", c.AGENT_CONTAINER]
    assert "restartPolicy" not in out["containers"][-1]


def test_the_code_volume_is_mounted_into_the_app_container_at_the_code_path() -> None:
    out = pod(run(deployment(code_path="/srv/www"))[0])
    puma = named(out["containers"], "puma")
    assert {"name": c.CODE_VOLUME, "mountPath": "/srv/www"} in puma["volumeMounts"]
    assert {"name": "secrets", "mountPath": "/etc/app-secrets", "readOnly": True} in puma["volumeMounts"]
    assert "volumeMounts" not in named(out["containers"], "log-shipper")
    for agent in out["initContainers"][:2]:
        assert agent["volumeMounts"] == [{"name": c.CODE_VOLUME, "mountPath": "/srv/www"}]


def test_the_container_annotation_chooses_the_puma_container() -> None:
    out = pod(run(deployment(container="log-shipper"))[0])
    assert any(m["name"] == c.CODE_VOLUME for m in named(out["containers"], "log-shipper")["volumeMounts"])
    assert "lifecycle" in named(out["containers"], "log-shipper")
    assert "lifecycle" not in named(out["containers"], "puma")


def test_pre_stop_is_a_sleep_action_sized_by_the_annotation() -> None:
    puma = named(pod(run(deployment(pre_stop_seconds="20"))[0])["containers"], "puma")
    assert puma["lifecycle"]["preStop"] == {"sleep": {"seconds": 20}}


def test_pre_stop_falls_back_to_exec_sleep_where_the_policy_says_so() -> None:
    puma = named(pod(run(deployment(), Policy(pre_stop_sleep_action=False))[0])["containers"], "puma")
    assert puma["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "15"]}}


@pytest.mark.parametrize(("annotations", "policy", "grace"), [
    ({}, Policy(), 15 + 30 + 10),
    ({"pre_stop_seconds": "5", "max_request_seconds": "120"}, Policy(), 5 + 120 + 10),
    ({}, Policy(grace_margin_seconds=0, max_request_seconds=60), 15 + 60),
])
def test_the_grace_period_covers_pre_stop_the_longest_request_and_a_margin(
        annotations: dict[str, str], policy: Policy, grace: int) -> None:
    assert pod(run(deployment(**annotations), policy)[0])["terminationGracePeriodSeconds"] == grace


def test_the_agent_gets_release_source_code_path_and_the_release_configmap() -> None:
    out = pod(run(deployment(code_path="/srv/www"), Policy(keep_releases=5, require_sha256=True))[0])
    for container in out["initContainers"][:2]:
        env = env_of(container)
        ref = {"name": "web-cfo-release", "optional": True}
        assert env["CFO_RELEASE"] == {"configMapKeyRef": {**ref, "key": "release"}}
        assert env["CFO_SOURCE"] == {"configMapKeyRef": {**ref, "key": "source"}}
        assert env["CFO_RELEASE_DEFAULT"] == "v41"
        assert env["CFO_SOURCE_DEFAULT"] == "s3://acme-releases/web/{release}.tar.gz"
        assert env["CFO_CODE_PATH"] == "/srv/www"
        assert env["CFO_APP_CONTAINER"] == "puma"
        assert env["CFO_KEEP_RELEASES"] == "5"
        assert env["CFO_REQUIRE_SHA256"] == "true"
        assert env["CFO_AGENT_PORT"] == "9443"
        assert env["CFO_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_the_agent_trusts_the_client_ca_from_the_policy() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    agent = pod(run(deployment(), Policy(agent_client_ca=pem))[0])["initContainers"][1]
    assert env_of(agent)["CFO_CLIENT_CA"] == pem


# --- the agent's privileges ------------------------------------------------------------------
# A capability added to a non-root container is never effective (no ambient capabilities), so
# the agent signals Puma either as Puma's own uid with no capability, or as root with CAP_KILL.

ROOT_WARNING = ("container puma sets no runAsUser: the agent runs as root with only CAP_KILL so it can "
                "signal Puma; set runAsUser (and runAsNonRoot) to run it unprivileged, as PodSecurity "
                "restricted requires")
HARDENED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "seccompProfile": {"type": "RuntimeDefault"}}
NO_CAPS = {"drop": ["ALL"]}
KILL_ONLY = {"drop": ["ALL"], "add": ["KILL"]}


def with_security(obj: dict[str, Any], container: dict[str, Any] | None,
                  pod_level: dict[str, Any] | None) -> dict[str, Any]:
    if container is not None:
        named(pod(obj)["containers"], "puma")["securityContext"] = container
    if pod_level is not None:
        pod(obj)["securityContext"] = pod_level
    return obj


# (case, puma's securityContext, the pod's, expected identity of both our containers,
#  the agent's capabilities, the warning or None)
PRIVILEGES = [
    ("uid given on the container", {"runAsUser": 1000, "runAsGroup": 1000}, None,
     {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}, NO_CAPS, None),
    ("uid given on the pod", None, {"runAsUser": 1001, "runAsGroup": 2000, "fsGroup": 2000},
     {"runAsUser": 1001, "runAsGroup": 2000, "runAsNonRoot": True}, NO_CAPS, None),
    ("the container's uid wins over the pod's", {"runAsUser": 1002}, {"runAsUser": 5000, "runAsGroup": 3000},
     {"runAsUser": 1002, "runAsGroup": 3000, "runAsNonRoot": True}, NO_CAPS, None),
    ("uid given without a group", {"runAsUser": 1003, "runAsNonRoot": True}, None,
     {"runAsUser": 1003, "runAsNonRoot": True}, NO_CAPS, None),
    ("the app runs as root explicitly", {"runAsUser": 0}, None,
     {"runAsUser": 0, "runAsNonRoot": False}, NO_CAPS, None),
    ("uid unknown", None, None,
     {"runAsUser": 0, "runAsNonRoot": False}, KILL_ONLY, ROOT_WARNING),
    ("uid unknown, group known", {"runAsGroup": 1000}, None,
     {"runAsUser": 0, "runAsGroup": 1000, "runAsNonRoot": False}, KILL_ONLY, ROOT_WARNING),
    ("uid unknown, the container lifts the pod's runAsNonRoot", {"runAsNonRoot": False}, {"runAsNonRoot": True},
     {"runAsUser": 0, "runAsNonRoot": False}, KILL_ONLY, ROOT_WARNING),
]


@pytest.mark.parametrize(("container", "pod_level", "identity", "agent_caps", "warning"),
                         [case[1:] for case in PRIVILEGES], ids=[case[0] for case in PRIVILEGES])
def test_the_agent_signals_puma_as_its_uid_or_as_root_with_only_cap_kill(
        container: dict[str, Any] | None, pod_level: dict[str, Any] | None, identity: dict[str, Any],
        agent_caps: dict[str, Any], warning: str | None) -> None:
    out, warnings = run(with_security(deployment(), container, pod_level))
    fetch, agent = pod(out)["initContainers"][:2]
    assert agent["securityContext"] == {**HARDENED, **identity, "capabilities": agent_caps}
    assert fetch["securityContext"] == {**HARDENED, **identity, "capabilities": NO_CAPS}
    assert (warning in warnings) if warning else not any("runAsUser" in w for w in warnings)


@pytest.mark.parametrize(("container", "pod_level"), [case[1:3] for case in PRIVILEGES],
                         ids=[case[0] for case in PRIVILEGES])
def test_mutating_twice_keeps_the_agents_privileges(container: dict[str, Any] | None,
                                                    pod_level: dict[str, Any] | None) -> None:
    once, _ = run(with_security(deployment(), container, pod_level))
    assert run(once)[0] == once


@pytest.mark.parametrize("policy", [Policy(), Policy(native_sidecars=False)], ids=["native sidecar", "container"])
def test_the_agent_and_fetch_are_hardened_for_a_restricted_namespace_in_every_layout(policy: Policy) -> None:
    out = pod(run(with_security(deployment(), {"runAsUser": 1000}, None), policy)[0])
    ours = [ct for ct in out["initContainers"] + out["containers"]
            if ct["name"] in (c.FETCH_CONTAINER, c.AGENT_CONTAINER)]
    assert len(ours) == 2
    for container in ours:
        assert container["securityContext"] == {**HARDENED, "runAsUser": 1000, "runAsNonRoot": True,
                                                "capabilities": NO_CAPS}


@pytest.mark.parametrize(("container", "pod_level"), [
    ({"runAsNonRoot": True}, None),
    (None, {"runAsNonRoot": True}),
    ({"runAsNonRoot": True, "runAsGroup": 1000}, {"fsGroup": 1000}),
], ids=["on the container", "on the pod", "with a group but no user"])
def test_run_as_non_root_without_a_uid_is_refused_at_admission(container: dict[str, Any] | None,
                                                               pod_level: dict[str, Any] | None) -> None:
    with pytest.raises(Refusal) as err:
        run(with_security(deployment(), container, pod_level))
    assert str(err.value) == ("container puma sets runAsNonRoot but no runAsUser: the agent must run as "
                              "Puma's uid to signal it; set securityContext.runAsUser (the uid of the "
                              "image's USER)")


def test_the_refusal_names_the_container_the_annotation_chose() -> None:
    obj = deployment(container="log-shipper")
    named(pod(obj)["containers"], "log-shipper")["securityContext"] = {"runAsNonRoot": True}
    with pytest.raises(Refusal, match="container log-shipper sets runAsNonRoot"):
        run(obj)


def test_the_apps_security_context_is_never_changed() -> None:
    obj = with_security(deployment(), {"runAsUser": 1000}, {"runAsGroup": 1000})
    out = pod(run(obj)[0])
    assert named(out["containers"], "puma")["securityContext"] == {"runAsUser": 1000}
    assert out["securityContext"] == {"runAsGroup": 1000}


# --- what a release source needs beyond the code volume (policy) ------------------------------

AGENT_KEYS = {
    "agentEnv": "[{name: AWS_REGION, value: eu-west-1},"
                " {name: AWS_SECRET_ACCESS_KEY, valueFrom: {secretKeyRef: {name: reader, key: secret}}},"
                " {name: SSL_CERT_FILE, value: /etc/cfo/ca/ca.crt}]",
    "agentVolumes": "[{name: release-ca, configMap: {name: release-ca}},"
                    " {name: releases, hostPath: {path: /srv/releases, type: Directory}}]",
    "agentVolumeMounts": "[{name: release-ca, mountPath: /etc/cfo/ca, readOnly: true},"
                         " {name: releases, mountPath: /srv/releases, readOnly: true}]",
}
AGENT_POLICY = policy_from_mapping(AGENT_KEYS)
CA_VOLUME = {"name": "release-ca", "configMap": {"name": "release-ca"}}


def ours(out: dict[str, Any]) -> list[dict[str, Any]]:
    every = pod(out)["initContainers"] + pod(out)["containers"]
    return [ct for ct in every if ct["name"] in (c.FETCH_CONTAINER, c.AGENT_CONTAINER)]


@pytest.mark.parametrize("native", [True, False], ids=["native sidecar", "container"])
def test_the_policys_env_and_mounts_reach_fetch_and_the_agent_after_ours(native: bool) -> None:
    out, _ = run(deployment(), policy_from_mapping({**AGENT_KEYS, "nativeSidecars": native}))
    assert len(ours(out)) == 2
    for container in ours(out):
        names = [e["name"] for e in container["env"]]
        assert names[-3:] == ["AWS_REGION", "AWS_SECRET_ACCESS_KEY", "SSL_CERT_FILE"]
        assert all(name.startswith("CFO_") for name in names[:-3])
        assert container["env"][-2]["valueFrom"] == {"secretKeyRef": {"name": "reader", "key": "secret"}}
        assert container["volumeMounts"] == [
            {"name": c.CODE_VOLUME, "mountPath": "/app"},
            {"name": "release-ca", "mountPath": "/etc/cfo/ca", "readOnly": True},
            {"name": "releases", "mountPath": "/srv/releases", "readOnly": True},
        ]


def test_the_policys_volumes_join_the_pod_but_not_the_app_container() -> None:
    out, _ = run(deployment(), AGENT_POLICY)
    assert [v["name"] for v in pod(out)["volumes"]] == ["secrets", c.CODE_VOLUME, "release-ca", "releases"]
    assert named(pod(out)["volumes"], "releases")["hostPath"] == {"path": "/srv/releases", "type": "Directory"}
    puma = named(pod(out)["containers"], "puma")
    assert [m["name"] for m in puma["volumeMounts"]] == ["secrets", c.CODE_VOLUME]
    assert "AWS_REGION" not in {e["name"] for e in puma["env"]}


def test_without_agent_keys_the_injected_annotation_keeps_its_old_form() -> None:
    out, _ = run(deployment())
    recorded = json.loads(out["spec"]["template"]["metadata"]["annotations"][c.INJECTED])
    assert set(recorded) == {"preStopSeconds", "preStopBase", "terminationGracePeriodSeconds", "graceBase"}


def test_a_user_volume_with_a_name_the_policy_uses_is_refused_naming_it() -> None:
    obj = deployment()
    pod(obj)["volumes"].append({"name": "releases", "emptyDir": {}})
    with pytest.raises(Refusal) as err:
        run(obj, AGENT_POLICY)
    assert str(err.value) == ("the pod template already has a volume named releases, a name the cluster policy "
                              "(agentVolumes) uses for a volume of the agent: rename yours")


def test_a_user_volume_identical_to_the_policys_is_kept_as_theirs_and_not_duplicated() -> None:
    obj = deployment()
    pod(obj)["volumes"].append(copy.deepcopy(CA_VOLUME))
    once, _ = run(obj, AGENT_POLICY)
    assert [v["name"] for v in pod(once)["volumes"]].count("release-ca") == 1
    assert run(once, AGENT_POLICY)[0] == once
    # A policy without it leaves the user's volume where it is.
    dropped = pod(run(once, Policy())[0])
    assert named(dropped["volumes"], "release-ca") == CA_VOLUME
    assert "releases" not in [v["name"] for v in dropped["volumes"]]


def test_a_changed_policy_replaces_or_removes_the_volumes_it_added() -> None:
    once, _ = run(deployment(), AGENT_POLICY)
    changed = policy_from_mapping({
        "agentVolumes": "[{name: releases, nfs: {server: nfs.internal, path: /exports}}]",
        "agentVolumeMounts": "[{name: releases, mountPath: /srv/releases}]",
    })
    again, _ = run(once, changed)
    assert [v["name"] for v in pod(again)["volumes"]] == ["secrets", c.CODE_VOLUME, "releases"]
    assert named(pod(again)["volumes"], "releases") == {"name": "releases",
                                                         "nfs": {"server": "nfs.internal", "path": "/exports"}}
    assert [m["name"] for m in ours(again)[0]["volumeMounts"]] == [c.CODE_VOLUME, "releases"]
    assert run(again, changed)[0] == again
    back = run(again, Policy())[0]
    assert pod(back)["volumes"] == pod(run(deployment())[0])["volumes"]
    assert back["spec"]["template"] == run(deployment())[0]["spec"]["template"]


@pytest.mark.parametrize(("code_path", "mount_path"), [
    ("/srv/releases", "/srv/releases"),
    ("/app", "/app/releases"),
    ("/srv/releases/web", "/srv/releases"),
], ids=["at the code path", "under the code path", "above the code path"])
def test_a_policy_mount_overlapping_the_code_path_is_refused(code_path: str, mount_path: str) -> None:
    policy = policy_from_mapping({"agentVolumes": "[{name: releases, emptyDir: {}}]",
                                  "agentVolumeMounts": f"[{{name: releases, mountPath: {mount_path}}}]"})
    with pytest.raises(Refusal) as err:
        run(deployment(code_path=code_path), policy)
    assert str(err.value) == (f"the cluster policy (agentVolumeMounts) mounts volume releases at {mount_path}, "
                              f"which overlaps the code path {code_path}: set annotation {c.CODE_PATH} to a "
                              f"path that neither contains {mount_path} nor lies inside it, or ask the cluster "
                              "admin to move that mount")


def test_a_policy_mount_beside_the_code_path_is_fine() -> None:
    out, _ = run(deployment(code_path="/srv/releases-code"), AGENT_POLICY)
    assert ours(out)[0]["volumeMounts"][0] == {"name": c.CODE_VOLUME, "mountPath": "/srv/releases-code"}


# --- idempotence --------------------------------------------------------------------------

MUTATION_VARIANTS = [
    ({}, Policy()),
    ({}, AGENT_POLICY),
    ({"code_path": "/srv/www"}, policy_from_mapping({**AGENT_KEYS, "nativeSidecars": False})),
    ({"volume": "emptyDir", "code_path": "/srv"}, Policy()),
    ({}, Policy(native_sidecars=False, pre_stop_sleep_action=False)),
    ({"pre_stop_seconds": "0"}, Policy()),
    ({"container": "log-shipper", "max_request_seconds": "600"}, Policy()),
]


@pytest.mark.parametrize(("annotations", "policy"), MUTATION_VARIANTS)
def test_mutating_twice_changes_nothing(annotations: dict[str, str], policy: Policy) -> None:
    once, _ = run(deployment(**annotations), policy)
    twice, _ = run(once, policy)
    assert twice == once


def test_mutating_never_changes_its_input() -> None:
    obj = deployment()
    snapshot = copy.deepcopy(obj)
    run(obj)
    assert obj == snapshot


def test_changing_only_the_release_leaves_the_pod_template_unchanged() -> None:
    once, _ = run(deployment())
    once["metadata"]["annotations"][c.RELEASE] = "v42"
    again, _ = run(once)
    assert again["spec"]["template"] == once["spec"]["template"]


def test_switching_off_native_sidecars_moves_the_agent_rather_than_copying_it() -> None:
    once, _ = run(deployment())
    again = pod(run(once, Policy(native_sidecars=False))[0])
    every = [ct["name"] for ct in again["initContainers"] + again["containers"]]
    assert every.count(c.AGENT_CONTAINER) == 1


def test_lowering_the_pre_stop_annotation_lowers_ours() -> None:
    once, _ = run(deployment(pre_stop_seconds="60"))
    once["metadata"]["annotations"][c.PRE_STOP_SECONDS] = "10"
    again = pod(run(once)[0])
    assert named(again["containers"], "puma")["lifecycle"]["preStop"] == {"sleep": {"seconds": 10}}
    assert again["terminationGracePeriodSeconds"] == 10 + 30 + 10


def test_lowering_ours_never_goes_below_the_users_own_grace_period() -> None:
    obj = deployment(pre_stop_seconds="60")
    pod(obj)["terminationGracePeriodSeconds"] = 90
    once, _ = run(obj)
    assert pod(once)["terminationGracePeriodSeconds"] == 100
    once["metadata"]["annotations"][c.PRE_STOP_SECONDS] = "5"
    assert pod(run(once)[0])["terminationGracePeriodSeconds"] == 90


# --- the user's own settings are respected -------------------------------------------------

@pytest.mark.parametrize("case", RESPECTED, ids=[case["case"] for case in RESPECTED])
def test_the_users_pre_stop_and_grace_period_are_kept_or_made_larger(case: dict[str, Any]) -> None:
    obj = deployment()
    puma = named(pod(obj)["containers"], "puma")
    if "preStop" in case:
        puma["lifecycle"] = {"preStop": case["preStop"]}
    if "grace" in case:
        pod(obj)["terminationGracePeriodSeconds"] = case["grace"]
    out, warnings = run(obj)
    out_puma = named(pod(out)["containers"], "puma")
    if "expect_preStop" in case:
        assert out_puma["lifecycle"]["preStop"] == case["expect_preStop"]
    assert pod(out)["terminationGracePeriodSeconds"] == case["expect_grace"]
    if "warning" in case:
        assert any(case["warning"] in w for w in warnings)
    assert run(out)[0] == out, "not idempotent"


def test_the_users_init_containers_and_volumes_are_kept_unchanged() -> None:
    obj = deployment()
    user_init = copy.deepcopy(pod(obj)["initContainers"][0])
    user_volume = copy.deepcopy(pod(obj)["volumes"][0])
    out = pod(run(obj)[0])
    assert named(out["initContainers"], "wait-for-db") == user_init
    assert named(out["volumes"], "secrets") == user_volume
    assert named(out["containers"], "log-shipper") == named(pod(BASE)["containers"], "log-shipper")


def test_the_users_other_lifecycle_hooks_are_kept() -> None:
    obj = deployment()
    named(pod(obj)["containers"], "puma")["lifecycle"] = {"postStart": {"exec": {"command": ["true"]}}}
    lifecycle = named(pod(run(obj)[0])["containers"], "puma")["lifecycle"]
    assert lifecycle == {"postStart": {"exec": {"command": ["true"]}}, "preStop": {"sleep": {"seconds": 15}}}


# --- warnings -------------------------------------------------------------------------------

def test_an_app_container_without_a_readiness_probe_draws_a_warning() -> None:
    obj = with_security(deployment(), {"runAsUser": 1000}, None)
    del named(pod(obj)["containers"], "puma")["readinessProbe"]
    _, warnings = run(obj)
    assert warnings == ["container puma has no readinessProbe: new pods will get traffic before Puma listens"]


def test_a_readiness_probe_and_a_known_uid_mean_no_warning() -> None:
    assert run(with_security(deployment(), {"runAsUser": 1000}, None))[1] == []


def test_share_process_namespace_false_is_overridden_with_a_warning() -> None:
    obj = deployment()
    pod(obj)["shareProcessNamespace"] = False
    out, warnings = run(obj)
    assert pod(out)["shareProcessNamespace"] is True
    assert any("shareProcessNamespace" in w for w in warnings)


def test_a_misspelt_annotation_draws_a_warning_with_a_suggestion() -> None:
    warnings = unknown_annotation_warnings({c.PREFIX + "relase": "v1", "other.io/x": "y"})
    assert warnings == ["unknown annotation customer-friendly.dev/relase is ignored; "
                        "did you mean customer-friendly.dev/release?"]


# --- refusals -------------------------------------------------------------------------------

def test_a_user_volume_with_the_reserved_name_is_refused() -> None:
    obj = deployment()
    pod(obj)["volumes"].append({"name": c.CODE_VOLUME, "secret": {"secretName": "x"}})
    with pytest.raises(Refusal, match="reserved for the code volume"):
        run(obj)
