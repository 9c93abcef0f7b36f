"""The cluster policy: strict parsing, the manifest's defaults, live reload with last-good."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from customer_friendly.contract.policy import (
    Policy,
    PolicyError,
    field_name,
    policy_from_mapping,
    policy_to_mapping,
    read_policy_path,
)
from customer_friendly.contract.policy_source import PolicySource
from customer_friendly.webhook.config import WebhookConfig

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_policy_configmap_states_exactly_the_built_in_defaults() -> None:
    assert read_policy_path(ROOT / "manifests" / "base" / "policy.yaml") == Policy()


def test_policy_to_mapping_and_back_is_the_identity() -> None:
    policy = Policy(allowed_source_prefixes=("s3://a/", "https://b/"), require_sha256=True, canary=2,
                    max_unavailable="3")
    assert policy_from_mapping(policy_to_mapping(policy)) == policy


# --- agentEnv, agentVolumes, agentVolumeMounts ---------------------------------------------

ENV_YAML = """
- name: AWS_REGION
  value: eu-west-1
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: release-reader, key: secret}}
"""
VOLUMES_YAML = """
- name: release-ca
  configMap: {name: release-ca}
- name: releases
  hostPath: {path: /srv/releases, type: Directory}
"""
MOUNTS_YAML = """
- {name: release-ca, mountPath: /etc/cfo/ca, readOnly: true}
- {name: releases, mountPath: /srv/releases}
"""
AGENT_KEYS = {"agentEnv": ENV_YAML, "agentVolumes": VOLUMES_YAML, "agentVolumeMounts": MOUNTS_YAML}


def manifest_example() -> dict[str, str]:
    """The commented example in policy.yaml, uncommented: the docs must parse."""
    lines = (ROOT / "manifests" / "base" / "policy.yaml").read_text().splitlines()
    start, end = lines.index("  # --- example"), lines.index("  # --- end example")
    return yaml.safe_load("\n".join(line.removeprefix("  # ") for line in lines[start + 1:end]))


def test_agent_keys_are_parsed_from_yaml_text() -> None:
    policy = policy_from_mapping(AGENT_KEYS)
    assert policy.agent_env_list() == [
        {"name": "AWS_REGION", "value": "eu-west-1"},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "release-reader", "key": "secret"}}},
    ]
    assert [v["name"] for v in policy.agent_volume_list()] == ["release-ca", "releases"]
    assert policy.agent_volume_mount_list()[0] == {"name": "release-ca", "mountPath": "/etc/cfo/ca", "readOnly": True}


def test_agent_keys_written_as_json_yaml_or_lists_make_the_same_hashable_policy() -> None:
    as_json = {key: json.dumps(yaml.safe_load(text)) for key, text in AGENT_KEYS.items()}
    as_lists = {key: yaml.safe_load(text) for key, text in AGENT_KEYS.items()}
    policies = {policy_from_mapping(AGENT_KEYS), policy_from_mapping(as_json), policy_from_mapping(as_lists),
                Policy(**{field_name(key): items for key, items in as_lists.items()})}
    assert len(policies) == 1


@pytest.mark.parametrize("data", [AGENT_KEYS, {"agentEnv": ENV_YAML}, {"agentVolumes": VOLUMES_YAML}],
                         ids=["all three", "env only", "volumes only"])
def test_agent_keys_round_trip_through_the_configmap_form(data: dict[str, str]) -> None:
    policy = policy_from_mapping(data)
    mapping = policy_to_mapping(policy)
    assert policy_from_mapping(mapping) == policy
    assert policy_to_mapping(policy_from_mapping(mapping)) == mapping


@pytest.mark.parametrize("empty", ["", "[]", "  \n", "null"])
def test_an_empty_agent_key_is_the_default(empty: str) -> None:
    assert policy_from_mapping(dict.fromkeys(AGENT_KEYS, empty)) == Policy()


def test_the_parsed_agent_keys_are_fresh_copies() -> None:
    policy = policy_from_mapping(AGENT_KEYS)
    policy.agent_env_list()[0]["value"] = "changed"
    policy.agent_volume_list().clear()
    assert policy.agent_env_list()[0]["value"] == "eu-west-1"
    assert len(policy.agent_volume_list()) == 2


def test_the_example_in_the_installed_policy_parses() -> None:
    policy = policy_from_mapping(manifest_example())
    assert {e["name"] for e in policy.agent_env_list()} >= {"AWS_ENDPOINT_URL_S3", "SSL_CERT_FILE", "AWS_CA_BUNDLE"}
    assert {m["name"] for m in policy.agent_volume_mount_list()} == {v["name"] for v in policy.agent_volume_list()}


def test_a_policy_file_may_write_the_agent_keys_as_yaml_lists(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({key: yaml.safe_load(text) for key, text in AGENT_KEYS.items()}))
    assert read_policy_path(path) == policy_from_mapping(AGENT_KEYS)


AGENT_KEY_REFUSALS = [
    ("an env name of ours", {"agentEnv": "[{name: CFO_SOURCE, value: x}]"},
     "agentEnv", "names starting with CFO_ are reserved"),
    ("bad yaml", {"agentEnv": "- name: A\n  value: [unclosed"},
     "agentEnv", "a YAML or JSON list of Kubernetes EnvVar objects"),
    ("not a list", {"agentEnv": "name: A"}, "agentEnv", "a YAML or JSON list"),
    ("an entry that is not an object", {"agentEnv": "[A=b]"}, "agentEnv", "each entry is an object"),
    ("both value and valueFrom", {"agentEnv": "[{name: A, value: x, valueFrom: {fieldRef: {fieldPath: x}}}]"},
     "agentEnv", "A needs exactly one of value or valueFrom"),
    ("neither value nor valueFrom", {"agentEnv": "[{name: A}]"}, "agentEnv", "exactly one of value or valueFrom"),
    ("a value that is not a string", {"agentEnv": "[{name: PORT, value: 9000}]"},
     "agentEnv", "value must be a string (quote it)"),
    ("an unknown valueFrom", {"agentEnv": "[{name: A, valueFrom: {vaultRef: {}}}]"},
     "agentEnv", "valueFrom holds exactly one of configMapKeyRef, secretKeyRef"),
    ("a secretKeyRef without a key", {"agentEnv": "[{name: A, valueFrom: {secretKeyRef: {name: s}}}]"},
     "agentEnv", "needs name and key"),
    ("a bad env name", {"agentEnv": "[{name: 'A B', value: x}]"}, "agentEnv", "environment variable name"),
    ("an unknown env field", {"agentEnv": "[{name: A, value: x, vaule: y}]"}, "agentEnv", "unknown field(s) vaule"),
    ("an env name twice", {"agentEnv": "[{name: A, value: x}, {name: A, value: y}]"}, "agentEnv", "A appears twice"),
    ("the reserved volume name", {"agentVolumes": "[{name: cfo-code, emptyDir: {}}]"},
     "agentVolumes", "cfo-code is reserved"),
    ("a volume name that is no DNS label", {"agentVolumes": "[{name: Releases, emptyDir: {}}]"},
     "agentVolumes", "DNS label"),
    ("a volume without a source", {"agentVolumes": "[{name: releases}]"},
     "agentVolumes", "exactly one volume source"),
    ("a volume with two sources", {"agentVolumes": "[{name: r, emptyDir: {}, hostPath: {path: /x}}]"},
     "agentVolumes", "exactly one volume source"),
    ("a volume name twice", {"agentVolumes": "[{name: r, emptyDir: {}}, {name: r, emptyDir: {}}]"},
     "agentVolumes", "r appears twice"),
    ("a mount of an unknown volume", {"agentVolumes": VOLUMES_YAML,
                                      "agentVolumeMounts": "[{name: relases, mountPath: /srv/releases}]"},
     "agentVolumeMounts", "one of the volumes in agentVolumes (release-ca, releases)"),
    ("a mount without volumes", {"agentVolumeMounts": "[{name: releases, mountPath: /srv}]"},
     "agentVolumeMounts", "agentVolumes (none)"),
    ("a relative mount path", {"agentVolumes": VOLUMES_YAML,
                               "agentVolumeMounts": "[{name: releases, mountPath: srv/releases}]"},
     "agentVolumeMounts", "absolute, normalised path"),
    ("a mount at /", {"agentVolumes": VOLUMES_YAML, "agentVolumeMounts": "[{name: releases, mountPath: /}]"},
     "agentVolumeMounts", "other than /"),
    ("an unknown mount field", {"agentVolumes": VOLUMES_YAML,
                                "agentVolumeMounts": "[{name: releases, mountPath: /srv, readonly: true}]"},
     "agentVolumeMounts", "unknown field(s) readonly"),
    ("a mount path twice", {"agentVolumes": VOLUMES_YAML, "agentVolumeMounts":
                            "[{name: releases, mountPath: /srv}, {name: release-ca, mountPath: /srv}]"},
     "agentVolumeMounts", "/srv appears twice"),
]


@pytest.mark.parametrize("text", ["[{name: CFO_KEY, value: s3cr3t}]", "- {name: KEY, value: s3cr3t, x: [",
                                  "[{name: KEY, value: s3cr3t, valueFrom: {}}]"])
def test_an_agent_env_error_never_shows_a_value(text: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy_from_mapping({"agentEnv": text})
    assert "s3cr3t" not in str(err.value)


@pytest.mark.parametrize(("data", "key", "fragment"), [case[1:] for case in AGENT_KEY_REFUSALS],
                         ids=[case[0] for case in AGENT_KEY_REFUSALS])
def test_an_invalid_agent_key_is_refused_naming_the_key_and_what_it_accepts(
        data: dict[str, str], key: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy_from_mapping(data)
    assert str(err.value).startswith(f"policy key {key}=")
    assert "is invalid: it accepts" in str(err.value)
    assert fragment in str(err.value)


@pytest.mark.parametrize(("text", "prefixes"), [
    ("", ()),
    ("s3://a/\nhttps://b/", ("s3://a/", "https://b/")),
    ("s3://a/, file:///srv/", ("s3://a/", "file:///srv/")),
    ('["s3://a/"]', ("s3://a/",)),
])
def test_allowed_source_prefixes_accept_lines_commas_or_json(text: str, prefixes: tuple[str, ...]) -> None:
    assert policy_from_mapping({"allowedSourcePrefixes": text}).allowed_source_prefixes == prefixes


@pytest.mark.parametrize(("data", "fragment"), [
    ({"preStopSecond": "15"}, "unknown policy key(s) preStopSecond"),
    ({"preStopSeconds": "soon"}, "preStopSeconds='soon' is invalid: it accepts a whole number"),
    ({"preStopSeconds": "200"}, "maxPreStopSeconds (120)"),
    ({"restart": "rolling"}, "restart='rolling'"),
    ({"maxUnavailable": "0%"}, "maxUnavailable"),
    ({"autoRollback": "yes"}, '"true" or "false"'),
    ({"volume": "hostPath"}, "efs or emptyDir"),
    ({"agentPort": "0"}, "agentPort"),
    ({"volumeSize": "lots"}, "Kubernetes quantity"),
    ({"allowedSourcePrefixes": "ftp://x/"}, "allowedSourcePrefixes"),
    ({"agentClientCA": "not a pem"}, "agentClientCA"),
    ({"keepReleases": "0"}, "keepReleases"),
])
def test_an_invalid_policy_is_refused_naming_the_key(data: dict[str, str], fragment: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy_from_mapping(data)
    assert fragment in str(err.value)


def test_a_mounted_configmap_directory_is_read_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "preStopSeconds").write_text("20\n")
    (tmp_path / "volume").write_text("emptyDir")
    (tmp_path / "..data").mkdir()  # kubelet's atomic-writer bookkeeping is ignored
    policy = read_policy_path(tmp_path)
    assert (policy.pre_stop_seconds, policy.volume) == (20, "emptyDir")


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_changed_policy_file_is_picked_up_and_a_broken_one_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("preStopSeconds: 20\n")
    clock = ManualClock()
    source = PolicySource(path, check_seconds=1, clock=clock)
    assert source.current().pre_stop_seconds == 20

    path.write_text("preStopSeconds: 25\nvolume: emptyDir\n")
    clock.now += 2
    assert source.current().pre_stop_seconds == 25

    path.write_text("preStopSeconds: never\n")
    clock.now += 2
    assert source.current().pre_stop_seconds == 25
    assert "preStopSeconds" in (source.last_error or "")

    path.write_text("preStopSeconds: 30\n")
    clock.now += 2
    assert source.current().pre_stop_seconds == 30
    assert source.last_error is None


def test_a_broken_policy_at_start_up_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("canary: many\n")
    with pytest.raises(PolicyError):
        PolicySource(path)


def test_without_a_policy_file_the_built_in_defaults_apply() -> None:
    assert PolicySource(WebhookConfig.from_env(env={}).policy_path).current() == Policy()
