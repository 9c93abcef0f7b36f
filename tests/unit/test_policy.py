"""The cluster policy: strict parsing, the manifest's defaults, live reload with last-good."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.config import PolicySource, WebhookConfig
from webhook.policy import Policy, PolicyError, policy_from_mapping, policy_to_mapping, read_policy_path

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_policy_configmap_states_exactly_the_built_in_defaults() -> None:
    assert read_policy_path(ROOT / "manifests" / "base" / "policy.yaml") == Policy()


def test_policy_to_mapping_and_back_is_the_identity() -> None:
    policy = Policy(allowedSourcePrefixes=("s3://a/", "https://b/"), requireSha256=True, canary=2,
                    maxUnavailable="3")
    assert policy_from_mapping(policy_to_mapping(policy)) == policy


@pytest.mark.parametrize(("text", "prefixes"), [
    ("", ()),
    ("s3://a/\nhttps://b/", ("s3://a/", "https://b/")),
    ("s3://a/, file:///srv/", ("s3://a/", "file:///srv/")),
    ('["s3://a/"]', ("s3://a/",)),
])
def test_allowed_source_prefixes_accept_lines_commas_or_json(text: str, prefixes: tuple[str, ...]) -> None:
    assert policy_from_mapping({"allowedSourcePrefixes": text}).allowedSourcePrefixes == prefixes


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
    assert (policy.preStopSeconds, policy.volume) == (20, "emptyDir")


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
    assert source.current().preStopSeconds == 20

    path.write_text("preStopSeconds: 25\nvolume: emptyDir\n")
    clock.now += 2
    assert source.current().preStopSeconds == 25

    path.write_text("preStopSeconds: never\n")
    clock.now += 2
    assert source.current().preStopSeconds == 25
    assert "preStopSeconds" in (source.last_error or "")

    path.write_text("preStopSeconds: 30\n")
    clock.now += 2
    assert source.current().preStopSeconds == 30
    assert source.last_error is None


def test_a_broken_policy_at_start_up_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("canary: many\n")
    with pytest.raises(PolicyError):
        PolicySource(path)


def test_without_a_policy_file_the_built_in_defaults_apply() -> None:
    assert PolicySource(WebhookConfig.from_env({}).policy_path).current() == Policy()
