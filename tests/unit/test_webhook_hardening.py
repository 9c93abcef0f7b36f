"""Regression tests for the webhook's part of issue 10 (items 6 to 10), beside the refusal table.

Every bad input that the API server can send is refused in tests/fixtures/refusals.json
(test_review.py runs it); here are the cases that are not refusals: bounded warnings, values
read back from our earlier output, and inputs that must be admitted and stay idempotent.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from customer_friendly import contract as c
from customer_friendly.contract.policy import Policy, parse_max_unavailable, policy_from_mapping
from customer_friendly.contract.settings import (
    MAX_UNKNOWN_WARNINGS,
    Refusal,
    check_code_path,
    check_source,
    resolve,
    unknown_annotation_warnings,
    whole_number,
)
from customer_friendly.webhook.mutation import mutate
from customer_friendly.webhook.review import answer, json_patch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BASE = json.loads((FIXTURES / "deployment.json").read_text())
UID = "0b7e2f52-0000-4000-8000-00000000000a"


def review(obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": UID, "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "operation": operation, "namespace": "shop", "name": "web", "object": obj}}


def admitted(obj: dict[str, Any], policy: Policy | None = None) -> tuple[dict[str, Any], list[str], str]:
    """(the object as the API server stores it, warnings, kind); fails on a refusal."""
    response, kind = answer(review(obj), policy or Policy())
    result = response["response"]
    assert result["allowed"] is True, result.get("status")
    patch = json.loads(__import__("base64").b64decode(result["patch"])) if "patch" in result else []
    return jsonpatch.apply_patch(obj, patch), result.get("warnings", []), kind


def pod(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def fetch_env(obj: dict[str, Any]) -> dict[str, Any]:
    fetch = next(ct for ct in pod(obj)["initContainers"] if ct["name"] == c.FETCH_CONTAINER)
    return {e["name"]: e.get("value") for e in fetch["env"]}


# --- 6. bounded time: the work per unknown annotation is bounded, and so are the warnings --------

def test_twenty_thousand_unknown_annotations_draw_a_bounded_number_of_warnings() -> None:
    obj = copy.deepcopy(BASE)
    obj["metadata"]["annotations"].update({f"{c.PREFIX}relase-{i:05d}": "x" for i in range(20_000)})
    _, warnings, _ = admitted(obj)
    unknown = [w for w in warnings if "unknown" in w]
    assert len(unknown) == MAX_UNKNOWN_WARNINGS + 1
    assert unknown[0] == (f"unknown annotation {c.PREFIX}relase-00000 is ignored; "
                          f"did you mean {c.RELEASE}?")
    assert unknown[-1] == f"{20_000 - MAX_UNKNOWN_WARNINGS} more unknown {c.PREFIX}* annotations are ignored"


def test_only_the_first_unknown_annotations_in_name_order_are_named() -> None:
    names = {c.PREFIX + name: "1" for name in ["zz", "canery", "relase", "a", "b", "c", "d", "e", "f", "g", "h", "i"]}
    warnings = unknown_annotation_warnings(names)
    assert len(warnings) == MAX_UNKNOWN_WARNINGS + 1
    assert warnings[0].startswith(f"unknown annotation {c.PREFIX}a is ignored")
    assert f"unknown annotation {c.PREFIX}canery is ignored; did you mean {c.CANARY}?" in warnings
    assert not any("relase" in w or c.PREFIX + "zz" in w for w in warnings)  # 11th and 12th in order
    assert warnings[-1] == f"2 more unknown {c.PREFIX}* annotations are ignored"


def test_a_long_unknown_annotation_is_not_fuzzy_matched_and_is_shortened_in_the_warning() -> None:
    name = c.PREFIX + "release" * 100_000
    [warning] = unknown_annotation_warnings({name: "v1"})
    assert "did you mean" not in warning and len(warning) < 200


def test_a_refusal_quotes_a_long_value_shortened() -> None:
    obj = copy.deepcopy(BASE)
    obj["metadata"]["annotations"][c.RELEASE] = "v" * 1_000_000
    response, kind = answer(review(obj), Policy())
    assert kind == "refused" and len(response["response"]["status"]["message"]) < 400


# --- 7. numbers: ASCII digits, few enough for int() ------------------------------------------

@pytest.mark.parametrize(("text", "number"), [
    ("0", 0), ("15", 15), (" 30 ", 30), ("007", 7), ("0" * 5000 + "9", 9), ("999999999", 999_999_999),
    ("1000000000", None), ("9" * 5000, None), ("\u00b2", None), ("\u0661", None), ("-1", None), ("+1", None),
    ("1_000", None), ("", None), ("  ", None), ("1.0", None),
], ids=repr)
def test_whole_numbers_are_ascii_digits_of_bounded_length(text: str, number: int | None) -> None:
    assert whole_number(text) == number


@pytest.mark.parametrize("text", ["9" * 5000, "9" * 5000 + "%", "\u00b2", "0", "101%"])
def test_max_unavailable_refuses_what_it_cannot_read(text: str) -> None:
    assert parse_max_unavailable(text) is None


# --- 8 and 9. our names: only our earlier output holds them, and what it pinned is re-checked -----

def forged(source: str, release: str = "v40") -> dict[str, Any]:
    """A template written by hand to look like our output, pinning its own fallback."""
    obj = copy.deepcopy(BASE)
    obj["spec"]["template"].setdefault("metadata", {})["annotations"] = {c.INJECTED: "{}"}
    pod(obj)["initContainers"].insert(0, {"name": c.FETCH_CONTAINER, "image": "attacker/fetch", "env": [
        {"name": "CFO_RELEASE_DEFAULT", "value": release}, {"name": "CFO_SOURCE_DEFAULT", "value": source}]})
    return obj


STRICT = policy_from_mapping({"allowedSourcePrefixes": "s3://acme-releases/"})


@pytest.mark.parametrize(("release", "source"), [
    ("v40", "https://evil.example/{release}.tar.gz"),        # outside the allowed prefixes
    ("v40", "s3://acme-releases-evil/{release}.tar.gz"),     # beside the allowed prefix
    ("v40", "s3:///{release}"),                              # malformed
    ("v40", "s3://acme-releases/web/{release}.tar.gz#x"),   # a fragment
    ("../v40", "s3://acme-releases/web/{release}.tar.gz"),  # not a release id
    ("v40\n", "s3://acme-releases/web/{release}.tar.gz"),   # not a release id either
], ids=["other host", "sibling bucket", "no bucket", "fragment", "bad release", "release with newline"])
def test_a_forged_cfo_fetch_cannot_pin_a_value_the_policy_refuses(release: str, source: str) -> None:
    obj = forged(source, release)
    obj["metadata"]["annotations"][c.SOURCE] = "s3://acme-releases/web/{release}.tar.gz"
    out, warnings, _ = admitted(obj, STRICT)
    env = fetch_env(out)
    assert env["CFO_SOURCE_DEFAULT"] == "s3://acme-releases/web/{release}.tar.gz"
    assert env["CFO_RELEASE_DEFAULT"] == "v41"
    assert any("CFO_SOURCE_DEFAULT" in w and "pinned again" in w for w in warnings)
    every = pod(out)["initContainers"] + pod(out)["containers"]
    assert [ct["name"] for ct in every].count(c.FETCH_CONTAINER) == 1
    assert all(ct.get("image") != "attacker/fetch" for ct in every)
    again, warnings, kind = admitted(out, STRICT)
    assert kind == "unchanged" and again == out
    assert not any("pinned" in w for w in warnings)


def test_a_pinned_source_the_policy_allows_is_kept_and_stays_pinned() -> None:
    obj = forged("s3://acme-releases/old/{release}.tar.gz")
    out, warnings, _ = admitted(obj, STRICT)
    assert fetch_env(out)["CFO_SOURCE_DEFAULT"] == "s3://acme-releases/old/{release}.tar.gz"
    assert fetch_env(out)["CFO_RELEASE_DEFAULT"] == "v40"
    assert not any("pinned" in w for w in warnings)


def test_our_own_pin_is_re_pinned_once_the_policy_no_longer_allows_it() -> None:
    once, _, _ = admitted(copy.deepcopy(BASE))
    assert fetch_env(once)["CFO_SOURCE_DEFAULT"] == "s3://acme-releases/web/{release}.tar.gz"
    tighter = policy_from_mapping({"allowedSourcePrefixes": "s3://acme-new/"})
    once["metadata"]["annotations"][c.SOURCE] = "s3://acme-new/web/{release}.tar.gz"
    once["metadata"]["annotations"][c.RELEASE] = "v42"
    out, warnings, _ = admitted(once, tighter)
    assert fetch_env(out)["CFO_SOURCE_DEFAULT"] == "s3://acme-new/web/{release}.tar.gz"
    assert fetch_env(out)["CFO_RELEASE_DEFAULT"] == "v42"
    assert any("pinned again" in w for w in warnings)
    assert admitted(out, tighter)[2] == "unchanged"


@pytest.mark.parametrize("native", [True, False], ids=["native sidecar", "container"])
def test_our_own_output_holds_our_names_and_mutates_to_itself(native: bool) -> None:
    policy = Policy(native_sidecars=native)
    once, _, kind = admitted(copy.deepcopy(BASE), policy)
    assert kind == "mutated"
    assert admitted(once, policy)[2] == "unchanged"
    # Switching the layout moves the agent; it is never duplicated nor refused.
    other = Policy(native_sidecars=not native)
    moved, _, _ = admitted(once, other)
    every = [ct["name"] for ct in pod(moved)["initContainers"] + pod(moved)["containers"]]
    assert every.count(c.AGENT_CONTAINER) == 1 and every.count(c.FETCH_CONTAINER) == 1
    assert admitted(moved, other)[2] == "unchanged"


def test_a_user_container_named_like_ours_is_refused_before_the_container_annotation_is_read() -> None:
    obj = copy.deepcopy(BASE)
    obj["metadata"]["annotations"][c.CONTAINER] = c.AGENT_CONTAINER
    pod(obj)["containers"].append({"name": c.AGENT_CONTAINER, "image": "x"})
    response, kind = answer(review(obj), Policy())
    assert kind == "refused"
    assert "reserved" in response["response"]["status"]["message"]


# --- 10. admitted and right --------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "s3://acme-releases/web/{release}.tar.gz",
    "s3://acme.releases.eu/web app/{release}.tar.gz",
    "https://releases.acme.example/web/{release}.tar.gz",
    "https://releases.acme.example:8443/web/{release}.tar.gz?versionId=1",
    "https://10.0.0.7/{release}.tar.gz",
    "https://[fd00::7]:8443/{release}.tar.gz",
    "https://releases.acme.example/{release}",
    "file:///srv/releases/{release}.tar.gz",
    "file://localhost/srv/releases/{release}.tar.gz",
])
def test_well_formed_sources_are_admitted(source: str) -> None:
    check_source(source, Policy())


@pytest.mark.parametrize(("prefix", "source"), [
    ("s3://acme-releases", "s3://acme-releases/web/{release}.tar.gz"),
    ("s3://acme-releases/web-", "s3://acme-releases/web-eu/{release}.tar.gz"),
    ("https://releases.acme.example", "https://releases.acme.example/{release}.tar.gz"),
    ("https://releases.acme.example/", "https://releases.acme.example/a/{release}.tar.gz"),
    ("file:///srv/releases", "file:///srv/releases/{release}.tar.gz"),
])
def test_a_source_under_an_allowed_prefix_is_admitted(prefix: str, source: str) -> None:
    check_source(source, policy_from_mapping({"allowedSourcePrefixes": prefix}))


@pytest.mark.parametrize("path", ["/app", "/srv/www", "/var/www/app", "/home/app/current", "/opt/app",
                                  "/workspace", "/usrdata", "/etcetera", "/variable"])
def test_ordinary_code_paths_are_admitted(path: str) -> None:
    check_code_path(path)


@pytest.mark.parametrize("path", ["/etc", "/var", "/opt", "/var/run/secrets/kubernetes.io/serviceaccount",
                                  "/app\x00", "/app\u202e"])
def test_system_and_unprintable_code_paths_are_refused(path: str) -> None:
    with pytest.raises(Refusal, match=c.CODE_PATH):
        check_code_path(path)


@pytest.mark.parametrize(("grace", "expected"), [(30.0, 55), (120.0, 120), (55.0, 55), (0.0, 55)])
def test_an_integral_float_grace_period_is_read_as_whole_seconds_and_stays_idempotent(
        grace: float, expected: int) -> None:
    obj = copy.deepcopy(BASE)
    pod(obj)["terminationGracePeriodSeconds"] = grace
    out, _, _ = admitted(obj)
    assert pod(out)["terminationGracePeriodSeconds"] == expected
    again, _, kind = admitted(out)
    assert again == out and kind == "unchanged"


def test_a_hostile_injected_record_is_read_as_absent() -> None:
    obj = copy.deepcopy(BASE)
    for text in ["9" * 5000, "[" * 100_000, '{"preStopBase": ' + "9" * 5000 + "}",
                 '{"preStopBase": 100000000000000000000, "preStopSeconds": 15}', "x" * 100_000]:
        obj["spec"]["template"]["metadata"]["annotations"] = {c.INJECTED: text}
        out, _, _ = admitted(copy.deepcopy(obj))
        assert pod(out)["terminationGracePeriodSeconds"] == 55


# --- the patch itself ----------------------------------------------------------------------------

@pytest.mark.parametrize(("src", "dst"), [
    ({"a": 1}, {"a": 1}),
    ({"a": 1}, {"a": 1.0}),
    ({"a": 1}, {"a": True}),
    ({"a/b": {"~c": 1}}, {"a/b": {"~c": 2}}),
    ({"l": [1, 2, 3]}, {"l": [0, 0, 1, 2, 3]}),
    ({"l": [1, 2, 3]}, {"l": [1, 2, 3, 4]}),
    ({"l": [9, 1, 2, 3]}, {"l": [8, 7, 1, 2, 3]}),
    ({"l": [1, 5, 6, 7, 3]}, {"l": [1, 3]}),
    ({"l": [{"n": "a"}, {"n": "b"}]}, {"l": [{"n": "a", "x": 1}]}),
    ({"l": [1]}, {"l": {"0": 1}}),
    ({}, {"x": [{"y": None}]}),
], ids=repr)
def test_json_patch_turns_one_object_into_the_other(src: dict[str, Any], dst: dict[str, Any]) -> None:
    patch = json_patch(src, dst)
    assert jsonpatch.apply_patch(copy.deepcopy(src), patch) == dst
    assert json.dumps(jsonpatch.apply_patch(copy.deepcopy(src), patch)) == json.dumps(dst)
    assert (patch == []) == (json.dumps(src) == json.dumps(dst))


def test_the_mutation_shares_what_it_does_not_change_and_never_modifies_its_input() -> None:
    obj = copy.deepcopy(BASE)
    snapshot = copy.deepcopy(obj)
    settings = resolve(obj["metadata"]["annotations"], ["puma", "log-shipper"], Policy())
    out, _ = mutate(obj, settings, Policy())
    assert obj == snapshot
    assert out["metadata"] is obj["metadata"]
    assert pod(out)["containers"][1] is pod(obj)["containers"][1]
