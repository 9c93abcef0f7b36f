"""AdmissionReview handling: parse, decide, respond. Pure functions, real JSON."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from customer_friendly import contract as c
from customer_friendly.contract.policy import Policy, policy_from_mapping
from customer_friendly.webhook.review import BadReview, admit, answer, parse_review

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BASE = json.loads((FIXTURES / "deployment.json").read_text())
REFUSALS = json.loads((FIXTURES / "refusals.json").read_text())


def review(obj: dict[str, Any] | None = None, operation: str = "CREATE", kind: str = "Deployment",
           group: str = "apps", uid: str = "7d1c1a3e-0000-4000-8000-000000000001") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": "v1", "kind": kind},
            "operation": operation,
            "namespace": "shop",
            "name": "web",
            "dryRun": False,
            "object": copy.deepcopy(BASE) if obj is None else obj,
        },
    }


def decoded_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


@pytest.mark.parametrize("body", [
    None, [], "text", {},
    {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x", "object": []}},
], ids=["null", "list", "string", "empty", "v1beta1", "no request", "empty uid", "object not a map"])
def test_a_malformed_review_is_a_bad_request(body: object) -> None:
    with pytest.raises(BadReview):
        parse_review(body)


def test_an_opted_in_deployment_gets_a_patch_that_produces_the_mutation() -> None:
    body = review()
    response, kind = answer(body, Policy())
    assert kind == "mutated"
    assert response["response"]["uid"] == body["request"]["uid"]
    assert response["response"]["allowed"] is True
    patched = jsonpatch.apply_patch(body["request"]["object"], decoded_patch(response["response"]))
    assert [i["name"] for i in patched["spec"]["template"]["spec"]["initContainers"]][:2] == [
        c.FETCH_CONTAINER, c.AGENT_CONTAINER]


def test_the_mutated_object_comes_back_with_no_patch() -> None:
    body = review()
    first, _ = answer(body, Policy())
    mutated = jsonpatch.apply_patch(body["request"]["object"], decoded_patch(first["response"]))
    again, kind = answer(review(mutated, operation="UPDATE"), Policy())
    assert kind == "unchanged"
    assert "patch" not in again["response"] and "patchType" not in again["response"]


@pytest.mark.parametrize("annotations", [{}, {c.ENABLED: "false"}, {"example.com/enabled": "true"}])
def test_a_deployment_that_is_not_opted_in_is_allowed_untouched(annotations: dict[str, str]) -> None:
    obj = copy.deepcopy(BASE)
    obj["metadata"]["annotations"] = annotations
    response, kind = answer(review(obj), Policy())
    assert kind == "unchanged"
    assert response["response"] == {"uid": review()["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(("operation", "kind", "group"), [
    ("DELETE", "Deployment", "apps"), ("CONNECT", "Deployment", "apps"),
    ("CREATE", "StatefulSet", "apps"), ("CREATE", "Deployment", "extensions.example.com"),
])
def test_other_operations_and_kinds_are_allowed_untouched(operation: str, kind: str, group: str) -> None:
    response, outcome = answer(review(operation=operation, kind=kind, group=group), Policy())
    assert outcome == "unchanged"
    assert response["response"]["allowed"] is True and "patch" not in response["response"]


def test_warnings_are_returned_to_kubectl() -> None:
    obj = copy.deepcopy(BASE)
    del obj["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    obj["metadata"]["annotations"][c.PREFIX + "canery"] = "2"
    response, _ = answer(review(obj), Policy())
    warnings = response["response"]["warnings"]
    assert "did you mean customer-friendly.dev/canary?" in warnings[0]
    assert "has no readinessProbe" in warnings[1]


@pytest.mark.parametrize("case", REFUSALS, ids=[case["case"] for case in REFUSALS])
def test_bad_input_is_refused_with_a_message_naming_the_annotation(case: dict[str, Any]) -> None:
    obj = copy.deepcopy(BASE)
    for name in case.get("remove", []):
        del obj["metadata"]["annotations"][name]
    obj["metadata"]["annotations"].update(case.get("annotations", {}))
    template = obj["spec"]["template"]
    template["spec"].update(case.get("pod", {}))
    template["spec"]["containers"][0].update(case.get("app", {}))
    template["spec"]["containers"].extend(case.get("containers", []))
    template["spec"]["initContainers"].extend(case.get("initContainers", []))
    template["spec"]["volumes"].extend(case.get("volumes", []))
    template["metadata"].setdefault("annotations", {}).update(case.get("template_annotations", {}))
    body = review(obj)
    response, kind = answer(body, policy_from_mapping(case.get("policy", {})))
    assert kind == "refused"
    result = response["response"]
    assert result["uid"] == body["request"]["uid"]
    assert result["allowed"] is False
    assert result["status"]["code"] == 403
    for fragment in case["message"]:
        assert fragment in result["status"]["message"]
    assert "patch" not in result


def test_an_unexpected_error_is_answered_with_the_uid_and_code_500() -> None:
    obj = copy.deepcopy(BASE)
    # Not a list, which the API server never sends: the mutation cannot cope.
    obj["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = 7
    body = review(obj)
    response, kind = answer(body, Policy())
    assert kind == "error"
    assert response["response"]["uid"] == body["request"]["uid"]
    assert response["response"]["allowed"] is False
    assert response["response"]["status"]["code"] == 500


def test_admit_reports_refusals_as_outcomes_not_exceptions() -> None:
    obj = copy.deepcopy(BASE)
    obj["metadata"]["annotations"][c.VOLUME] = "nfs"
    outcome = admit(review(obj)["request"], Policy())
    assert outcome.allowed is False and outcome.kind == "refused"
