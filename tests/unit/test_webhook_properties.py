"""Property tests of the pure review (webhook/review.py), over generated input.

- Any JSON body gets a well-formed AdmissionReview answer carrying the request's uid, or is a
  bad request (no uid to answer): never an exception.
- Deployments of the shapes the API server sends, with hostile values where users choose them,
  are admitted or refused, never an internal error; an admitted patch, applied and reviewed
  again, gives no patch (idempotence); the input is never modified.
- Nothing is patched unless opted in.
- The work is bounded structurally: warnings are capped whatever the number of annotations
  (the time itself is measured outside the tests, not asserted).
- The patch turns the object into the mutated one exactly, for any pair of JSON documents.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from pathlib import Path
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customer_friendly import contract as c
from customer_friendly.contract.policy import Policy, policy_from_mapping
from customer_friendly.contract.settings import MAX_UNKNOWN_WARNINGS, unknown_annotation_warnings
from customer_friendly.webhook.review import BadReview, answer, json_patch

BASE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "deployment.json").read_text())
SETTINGS = settings(max_examples=250, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FLOATS = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != 0 or math.copysign(1, f) > 0)
SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | FLOATS | st.text(max_size=12)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=25)

POLICIES = st.sampled_from([
    Policy(),
    Policy(native_sidecars=False, pre_stop_sleep_action=False),
    policy_from_mapping({"allowedSourcePrefixes": "s3://acme-releases/", "volume": "emptyDir"}),
    policy_from_mapping({"agentVolumes": "[{name: releases, hostPath: {path: /srv/releases}}]",
                         "agentVolumeMounts": "[{name: releases, mountPath: /srv/releases}]",
                         "agentEnv": "[{name: AWS_REGION, value: eu-west-1}]"}),
])

def rare(common: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `common`, one draw in eight `hostile`: most examples get as far as the mutation."""
    return st.integers(0, 7).flatmap(lambda n: hostile if n == 0 else common)


# Values users write into annotations: a valid one per annotation, or a hostile one.
GOOD = {
    c.RELEASE: ["v41", "v42", "2024.01.02-abc"], c.SOURCE: ["s3://acme-releases/web/{release}.tar.gz",
                                                             "https://releases.acme.example/{release}.tar.gz"],
    c.CONTAINER: ["puma", "log-shipper"], c.CODE_PATH: ["/app", "/srv/www", "/var/www/app"],
    c.RESTART: ["phased", "hot", "drain", "signal:HUP"], c.PRE_STOP_SECONDS: ["0", "5", "20", "120"],
    c.MAX_REQUEST_SECONDS: ["1", "60", "600"], c.MAX_UNAVAILABLE: ["1", "50%", "100%"], c.CANARY: ["0", "2"],
    c.VOLUME: ["efs", "emptyDir"], c.STORAGE_CLASS: ["efs-fast"], c.PAUSED: ["true", "false"],
    c.PROCESS: ["puma \\d+", "^sidekiq"], c.QUIET_SIGNAL: ["TSTP"], c.DRAIN_SECONDS: ["30"],
    c.MIGRATE: ["bin/rails db:migrate"], c.MIGRATE_TIMEOUT: ["600"], c.ROLE: ["web", "worker"],
    c.APP: ["shop"], c.RETRY: ["1"],
}
HOSTILE_TEXT = st.sampled_from([
    "", " ", "yes", "-1", "121", "150%", "\u00b2", "\u0661\u0665", "9" * 5000, "9" * 5000 + "%", "../v1", "v1\n",
    "signal:KILL", "EFS", "/etc", "/var/run/secrets/x", "/", "app", "/app/../etc", "/app\n", "cfo-agent",
    "cfo-fetch", "unicorn", "s3:///{release}", "https://{release}", "https://acme.example/{release}.tar.gz#x",
    "https://u:p@acme.example/{release}", "s3://acme-releases/web/{release}.tar.gz\x00", "a{99999999999}",
    "(" * 300, "[",
]) | st.text(max_size=20)
ANNOTATION_NAMES = st.sampled_from((*c.USER_ANNOTATIONS, c.PREFIX + "relase", c.PREFIX + "x"))


@st.composite
def user_annotations(draw: st.DrawFn) -> dict[str, str]:
    names = draw(st.lists(ANNOTATION_NAMES, max_size=5, unique=True))
    return {name: draw(rare(st.sampled_from(GOOD.get(name, ["1"])), HOSTILE_TEXT)) for name in names}


NAMES = rare(st.sampled_from(["puma", "log-shipper", "worker", "metrics"]),
             st.sampled_from([c.FETCH_CONTAINER, c.AGENT_CONTAINER, "", None]))
PRE_STOPS = rare(st.sampled_from([None, {"sleep": {"seconds": 5}}, {"sleep": {"seconds": 40}},
                                  {"exec": {"command": ["sleep", "25"]}}, {"exec": {"command": ["sleep", "3"]}},
                                  {"exec": {"command": ["/bin/sleep", "10s"]}}, {"exec": {"command": ["bin/drain"]}},
                                  {"httpGet": {"path": "/drain", "port": 3000}}]),
                 st.sampled_from([{"sleep": {"seconds": 10**12}}, {"sleep": {"seconds": 30.0}},
                                  {"exec": {"command": ["sleep", "\u00b2"]}},
                                  {"exec": {"command": ["sleep", "9" * 5000]}}]))
GRACES = rare(st.sampled_from([None, 0, 20, 120, 30.0, 120.0]), st.sampled_from([30.5, True, -1, 10**12]))
SECURITY = rare(st.sampled_from([None, {"runAsUser": 1000}, {"runAsUser": 0}]), st.just({"runAsNonRoot": True}))
VOLUMES = rare(st.sampled_from([{"name": "data", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}]),
               st.sampled_from([{"name": c.CODE_VOLUME, "emptyDir": {}},
                                {"name": c.CODE_VOLUME, "secret": {"secretName": "x"}},
                                {"name": "releases", "emptyDir": {}}]))
INJECTED = rare(st.none(), st.sampled_from(["{}", "9" * 5000, '{"preStopSeconds": 15, "preStopBase": 99999999999}',
                                            '{"agentVolumes": ["data"]}', "not json"]))


@st.composite
def containers(draw: st.DrawFn, app: bool) -> dict[str, Any]:
    name = draw(NAMES)
    container: dict[str, Any] = {"image": "registry.example.com/app:1"}
    if name is not None:
        container["name"] = name
    pre_stop = draw(PRE_STOPS)
    if pre_stop is not None:
        container["lifecycle"] = {"preStop": pre_stop}
    security = draw(SECURITY)
    if security is not None:
        container["securityContext"] = security
    if app and draw(st.booleans()):
        container["readinessProbe"] = {"httpGet": {"path": "/up", "port": 3000}}
    return container


def _unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[object] = set()
    unique = []
    for item in items:
        if item.get("name") not in seen:
            seen.add(item.get("name"))
            unique.append(item)
    return unique


OPTED_IN = st.just("true")


@st.composite
def deployments(draw: st.DrawFn, enabled: st.SearchStrategy[str | None] = OPTED_IN) -> dict[str, Any]:
    """Deployments of the shapes the API server sends, with hostile values users could write."""
    obj = copy.deepcopy(BASE)
    annotations = obj["metadata"]["annotations"]
    annotations.update(draw(user_annotations()))
    value = draw(enabled)
    if value is None:
        annotations.pop(c.ENABLED, None)
    else:
        annotations[c.ENABLED] = value
    pod = obj["spec"]["template"]["spec"]
    pod["containers"] = _unique([draw(containers(app=True)), *draw(st.lists(containers(app=False), max_size=2))])
    pod["initContainers"] = _unique(draw(st.lists(containers(app=False), max_size=2)))
    pod["volumes"] = _unique(draw(st.lists(VOLUMES, max_size=2)))
    grace = draw(GRACES)
    if grace is not None:
        pod["terminationGracePeriodSeconds"] = grace
    injected = draw(INJECTED)
    if injected is not None:
        obj["spec"]["template"]["metadata"]["annotations"] = {c.INJECTED: injected}
    return obj


def review(obj: object, uid: str = "uid-1", operation: str = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "operation": operation, "namespace": "shop", "name": "web", "object": obj}}


def check_well_formed(response: dict[str, Any], uid: str) -> None:
    assert set(response) == {"apiVersion", "kind", "response"}
    assert response["apiVersion"] == "admission.k8s.io/v1" and response["kind"] == "AdmissionReview"
    result = response["response"]
    assert result["uid"] == uid
    assert isinstance(result["allowed"], bool)
    if not result["allowed"]:
        assert isinstance(result["status"]["message"], str) and result["status"]["message"]
        assert result["status"]["code"] in (403, 500)
        assert "patch" not in result
    if "patch" in result:
        assert result["patchType"] == "JSONPatch"
        assert isinstance(json.loads(base64.b64decode(result["patch"])), list)
    assert all(isinstance(w, str) for w in result.get("warnings", []))
    json.dumps(response)  # serialisable as it is


def patched(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    result = response["response"]
    if "patch" not in result:
        return obj
    return jsonpatch.apply_patch(obj, json.loads(base64.b64decode(result["patch"])))


@SETTINGS
@given(body=JSON | st.builds(review, JSON, st.text(max_size=10),
                             st.sampled_from(["CREATE", "UPDATE", "DELETE", "", "x"])),
       policy=POLICIES)
def test_any_json_gets_a_well_formed_answer_with_its_uid_or_is_a_bad_request(body: object, policy: Policy) -> None:
    try:
        response, _ = answer(copy.deepcopy(body), policy)
    except BadReview:
        request = body.get("request") if isinstance(body, dict) else None
        uid = request.get("uid") if isinstance(request, dict) else None
        object_ok = not isinstance(request, dict) or request.get("object") is None \
            or isinstance(request.get("object"), dict)
        assert not (isinstance(body, dict) and isinstance(uid, str) and uid
                    and body.get("apiVersion") == "admission.k8s.io/v1"
                    and body.get("kind") == "AdmissionReview" and object_ok)
        return
    assert isinstance(body, dict)
    check_well_formed(response, body["request"]["uid"])


@SETTINGS
@given(obj=deployments(), policy=POLICIES, uid=st.text(min_size=1, max_size=36))
def test_a_deployment_is_admitted_or_refused_never_an_internal_error_and_patches_are_idempotent(
        obj: dict[str, Any], policy: Policy, uid: str) -> None:
    snapshot = copy.deepcopy(obj)
    response, kind = answer(review(obj, uid), policy)
    assert obj == snapshot, "the review modified its input"
    check_well_formed(response, uid)
    assert kind != "error", response["response"]["status"]["message"]
    if kind == "refused":
        return
    once = patched(obj, response)
    again, kind_again = answer(review(once, uid, "UPDATE"), policy)
    assert kind_again == "unchanged", again["response"].get("status")
    assert "patch" not in again["response"]


@SETTINGS
@given(obj=deployments(enabled=st.sampled_from([None, "false"])), policy=POLICIES)
def test_nothing_is_patched_unless_opted_in(obj: dict[str, Any], policy: Policy) -> None:
    response, kind = answer(review(obj), policy)
    assert kind == "unchanged"
    assert response["response"] == {"uid": "uid-1", "allowed": True}


@SETTINGS
@given(names=st.lists(st.text(min_size=0, max_size=300), max_size=60),
       count=st.integers(0, 20_000))
def test_warnings_about_unknown_annotations_are_bounded_whatever_their_number(names: list[str], count: int) -> None:
    annotations = {c.PREFIX + name: "x" for name in names}
    annotations.update({f"{c.PREFIX}unknown-{i}": "x" for i in range(count)})
    unknown = [name for name in annotations if name not in c.KNOWN_ANNOTATIONS]
    warnings = unknown_annotation_warnings(annotations)
    assert len(warnings) == min(len(unknown), MAX_UNKNOWN_WARNINGS) + (len(unknown) > MAX_UNKNOWN_WARNINGS)
    assert sum("did you mean" in w for w in warnings) <= MAX_UNKNOWN_WARNINGS
    assert all(len(w) < 300 for w in warnings)


@SETTINGS
@given(src=st.dictionaries(st.text(max_size=4), JSON, max_size=5),
       dst=st.dictionaries(st.text(max_size=4), JSON, max_size=5))
def test_the_patch_turns_any_document_into_any_other(src: dict[str, Any], dst: dict[str, Any]) -> None:
    def exact(value: object) -> str:
        return json.dumps(value, sort_keys=True)

    patch = json_patch(src, dst)
    assert exact(jsonpatch.apply_patch(copy.deepcopy(src), patch)) == exact(dst)
    assert (patch == []) == (exact(src) == exact(dst))
    assert json_patch(dst, copy.deepcopy(dst)) == []
