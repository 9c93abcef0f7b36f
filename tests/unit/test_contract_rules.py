"""The policy's and the annotations' rules, split into small validators: which one speaks first.

When several values are bad, the first rule in the documented order names its key; the split
into groups must not change that order, nor any message.
"""

from __future__ import annotations

import re

import pytest

from customer_friendly import contract as c
from customer_friendly.contract.policy import Policy, PolicyError
from customer_friendly.contract.settings import Refusal, resolve

R = c.RELEASE_PLACEHOLDER
GOOD = {c.RELEASE: "v1", c.SOURCE: f"s3://bucket/app/{R}.tar.gz"}


@pytest.mark.parametrize(("bad", "named"), [
    ({"agent_image": "", "agent_port": 0, "canary": -1}, "agentImage"),
    ({"agent_port": 0, "agent_memory_limit": "lots"}, "agentPort"),
    ({"agent_client_ca": "not a cert", "volume_size": "1x"}, "agentClientCA"),
    ({"empty_dir_size_limit": "1x", "restart": "bogus"}, "emptyDirSizeLimit"),
    ({"restart": "bogus", "max_pre_stop_seconds": -1}, "restart"),
    ({"pre_stop_seconds": 200, "max_max_request_seconds": 0}, "preStopSeconds"),
    ({"max_request_seconds": 0, "grace_margin_seconds": 601}, "maxRequestSeconds"),
    ({"grace_margin_seconds": 601, "max_unavailable": "0"}, "graceMarginSeconds"),
    ({"canary": -1, "volume": "nfs"}, "canary"),
    ({"storage_class": "Bad_Class", "keep_releases": 0}, "storageClass"),
    ({"keep_releases": 0, "allowed_source_prefixes": ("ftp://x",)}, "keepReleases"),
])
def test_the_first_bad_policy_key_in_order_is_the_one_named(bad: dict[str, object], named: str) -> None:
    with pytest.raises(PolicyError, match=f"^policy key {re.escape(named)}="):
        Policy(**bad)  # type: ignore[arg-type]  # wrong types on purpose


def test_policy_messages_are_unchanged() -> None:
    with pytest.raises(PolicyError) as caught:
        Policy(pre_stop_seconds=200, max_pre_stop_seconds=100)
    assert str(caught.value) == ("policy key preStopSeconds=200 is invalid: it accepts whole seconds "
                                 "from 0 to maxPreStopSeconds (100)")
    with pytest.raises(PolicyError) as caught:
        Policy(agent_client_ca="secret-ish text")
    assert str(caught.value) == "policy key agentClientCA='<not PEM>' is invalid: it accepts a PEM certificate bundle"
    assert Policy(agent_cpu_request="250m").agent_cpu_request == "250m"
    with pytest.raises(PolicyError, match=r"^policy key agentMemoryRequest='250m'"):
        Policy(agent_memory_request="250m")


@pytest.mark.parametrize(("extra", "named"), [
    ({c.RELEASE: "bad id!", c.CONTAINER: "nope"}, c.RELEASE),
    ({c.CONTAINER: "nope", c.RESTART: "bogus"}, c.CONTAINER),
    ({c.CODE_PATH: "/etc", c.RESTART: "bogus"}, c.CODE_PATH),
    ({c.RESTART: "bogus", c.ROLE: "boss"}, c.RESTART),
    ({c.ROLE: "boss", c.APP: "Shop!"}, c.ROLE),
    ({c.APP: "Shop!", c.QUIET_SIGNAL: "NOPE"}, c.APP),
    ({c.QUIET_SIGNAL: "NOPE", c.PROCESS: "(("}, c.QUIET_SIGNAL),
    ({c.PROCESS: "((", c.MAX_UNAVAILABLE: "0"}, c.PROCESS),
    ({c.MAX_UNAVAILABLE: "0", c.CANARY: "x"}, c.MAX_UNAVAILABLE),
    ({c.CANARY: "x", c.VOLUME: "nfs"}, c.CANARY),
    ({c.VOLUME: "nfs", c.STORAGE_CLASS: "BAD"}, c.VOLUME),
    ({c.STORAGE_CLASS: "BAD", c.MIGRATE: " "}, c.STORAGE_CLASS),
    ({c.MIGRATE: " ", c.PRE_STOP_SECONDS: "999"}, c.MIGRATE),
    ({c.PRE_STOP_SECONDS: "999", c.MAX_REQUEST_SECONDS: "0"}, c.PRE_STOP_SECONDS),
    ({c.MAX_REQUEST_SECONDS: "0", c.PAUSED: "maybe"}, c.MAX_REQUEST_SECONDS),
    ({c.PAUSED: "maybe", c.MIGRATE_TIMEOUT: "0"}, c.PAUSED),
    ({c.MIGRATE_TIMEOUT: "0", c.DRAIN_SECONDS: "99999"}, c.MIGRATE_TIMEOUT),
    ({c.DRAIN_SECONDS: "99999"}, c.DRAIN_SECONDS),
])
def test_the_first_bad_annotation_in_order_is_the_one_named(extra: dict[str, str], named: str) -> None:
    with pytest.raises(Refusal, match=f"^annotation {re.escape(named)}="):
        resolve({**GOOD, **extra}, ["app"], Policy())


def test_a_missing_release_is_named_before_a_missing_source_or_containers() -> None:
    with pytest.raises(Refusal, match=f"^annotation {re.escape(c.RELEASE)} is required"):
        resolve({}, [], Policy())
    with pytest.raises(Refusal, match=f"^annotation {re.escape(c.SOURCE)} is required"):
        resolve({c.RELEASE: "v1"}, [], Policy())
    with pytest.raises(Refusal, match=r"^the pod template has no containers$"):
        resolve(GOOD, [], Policy())


def test_resolve_returns_every_part() -> None:
    settings = resolve({**GOOD, c.CONTAINER: "app", c.CODE_PATH: "/srv/app", c.RESTART: "drain",
                        c.QUIET_SIGNAL: "USR1", c.PROCESS: "sidekiq", c.MAX_UNAVAILABLE: "2", c.CANARY: "0",
                        c.VOLUME: "emptyDir", c.STORAGE_CLASS: "gp3", c.MIGRATE: "rake db:migrate",
                        c.PAUSED: "true", c.DRAIN_SECONDS: "5"}, ["side", "app"], Policy())
    assert (settings.container, settings.code_path, settings.restart, settings.quiet_signal, settings.process,
            settings.max_unavailable, settings.canary, settings.volume, settings.storage_class, settings.migrate,
            settings.paused, settings.drain_seconds) == (
        "app", "/srv/app", "drain", "USR1", "sidekiq", "2", 0, "emptyDir", "gp3", "rake db:migrate", True, 5)
    defaults = resolve(GOOD, ["first", "second"], Policy(canary=3))
    assert (defaults.container, defaults.code_path, defaults.canary, defaults.process, defaults.migrate) == (
        "first", "/app", 3, None, None)


TEMPLATE = f"a URI template containing {R}, which is replaced by the release id"


@pytest.mark.parametrize(("source", "accepts"), [
    (f"s3://Bucket/{R}", "s3://BUCKET/KEY with a bucket name of 3 to 63 lower-case letters, digits, '.' and '-' "
                         f"and a key containing {R}"),
    (f"s3://{R}/key", "s3://BUCKET/KEY with a bucket name of 3 to 63"),
    (f"s3://bucket/../{R}", f"{TEMPLATE}, without '.' or '..' path segments"),
    (f"https://[zz]/{R}", f"https://HOST/PATH with a valid host name and {R} in the path"),
    (f"https://u:p@host/{R}", "https://HOST/PATH without a user name or password"),
    (f"https://host:99999/{R}", "https://HOST/PATH with a host name (or IP address, optionally :port)"),
    (f"https://host/%2e%2e/{R}", f"{TEMPLATE}, without '.' or '..' path segments"),
    (f"file://host/{R}", f"file:///ABSOLUTE/PATH (three slashes) with {R} in the file name"),
    (f"file:///srv/./{R}", f"{TEMPLATE}, without '.' or '..' path segments"),
    (f"ftp://host/{R}", "a URI starting with s3://, https://, file:// and containing"),
    (f"s3://bucket/{R}#x", f"{TEMPLATE}, without a fragment ('#')"),
    ("s3://bucket/key", TEMPLATE),
])
def test_each_scheme_has_its_own_message(source: str, accepts: str) -> None:
    with pytest.raises(Refusal) as caught:
        resolve({**GOOD, c.SOURCE: source}, ["app"], Policy())
    assert str(caught.value).split(" is invalid: it accepts ", 1)[1].startswith(accepts)


@pytest.mark.parametrize("source", [f"s3://bucket/app/{R}.tgz", f"https://[::1]:8443/r/{R}.tgz",
                                    f"https://host/r?id={R}", f"file:///srv/releases/{R}.tgz",
                                    f"file://localhost/srv/{R}.tgz"])
def test_good_sources_of_each_scheme_are_admitted(source: str) -> None:
    assert resolve({**GOOD, c.SOURCE: source}, ["app"], Policy()).source == source
