"""AdmissionReview in, AdmissionReview out: the webhook's logic without HTTP.

`admit` decides; `build_response` is the only place that shapes a response, and it always
carries the request's uid. The patch is `json_patch(original, mutated)`, a generic difference,
so no JSON-Pointer is ever typed by hand and an unchanged object yields no patch at all.

Every step is bounded by the size of the object (which the HTTP layer caps at 7 MiB) with
small constants, so that any review is answered well within the API server's timeout: no
step does work per annotation or per list item beyond a comparison, and nothing is quadratic.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from customer_friendly.contract.objects import Obj
from customer_friendly.contract.policy import Policy
from customer_friendly.contract.settings import Refusal, opted_in, resolve, unknown_annotation_warnings
from customer_friendly.webhook import mutation

logger = logging.getLogger(__name__)



API_VERSION = "admission.k8s.io/v1"


class BadReview(ValueError):
    """The body is not an AdmissionReview we can answer (HTTP 400)."""


@dataclass
class Outcome:
    """What `admit` decided, before it is shaped into a response."""

    allowed: bool = True
    message: str = ""
    code: int | None = None
    patch: list[Obj] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    kind: str = "unchanged"  # unchanged, mutated, refused or error, for metrics


def parse_review(body: object) -> Obj:
    """The `request` of a v1 AdmissionReview, checked just enough to answer it."""
    if not isinstance(body, dict):
        raise BadReview("body must be a JSON object (an AdmissionReview)")
    if body.get("apiVersion") != API_VERSION or body.get("kind") != "AdmissionReview":
        raise BadReview(f"expected apiVersion {API_VERSION} and kind AdmissionReview")
    request = body.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str) or not request["uid"]:
        raise BadReview("AdmissionReview.request with a uid is required")
    if request.get("object") is not None and not isinstance(request.get("object"), dict):
        raise BadReview("AdmissionReview.request.object must be an object")
    return request


def build_response(request: Obj, outcome: Outcome) -> Obj:
    response: Obj = {"uid": request["uid"], "allowed": outcome.allowed}
    if not outcome.allowed:
        response["status"] = {"message": outcome.message, "code": outcome.code or 403,
                              "reason": "Forbidden" if (outcome.code or 403) == 403 else "InternalError"}
    if outcome.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(outcome.patch).encode()).decode()
    if outcome.warnings:
        response["warnings"] = outcome.warnings
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def _pointer(path: str, key: str | int) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _same(src: object, dst: object) -> bool:
    """Equal as JSON: 30.0 and 30, or 1 and true, differ, though Python finds them equal.

    Identity first: the mutation shares what it does not change with its input, so the
    walk below only ever runs over the few parts it rebuilt.
    """
    if src is dst:
        return True
    if type(src) is not type(dst) or src != dst:
        return False
    if isinstance(src, dict) and isinstance(dst, dict):
        return all(_same(value, dst[key]) for key, value in src.items())
    if isinstance(src, list) and isinstance(dst, list):
        return all(_same(a, b) for a, b in zip(src, dst, strict=True))
    return True


def json_patch(src: object, dst: object, path: str = "") -> list[Obj]:
    """An RFC 6902 patch that turns `src` into `dst`; [] when they are equal.

    Not `jsonpatch.make_patch`: to match up list items it serialises every item of every list
    it meets, changed or not, which takes seconds for an object near the 7 MiB cap. Here equal
    parts cost one C-level comparison (usually an identity test); list items are matched by
    their common start and end, the rest by position (removed from the end, added in order),
    which is what the mutation does to lists (ours put in front, ours appended, one replaced).
    """
    ops: list[Obj] = []
    _diff(src, dst, path, ops)
    return ops


def _diff(src: object, dst: object, path: str, ops: list[Obj]) -> None:
    if _same(src, dst):
        return
    if isinstance(src, dict) and isinstance(dst, dict):
        ops.extend({"op": "remove", "path": _pointer(path, key)} for key in src if key not in dst)
        for key, value in dst.items():
            if key not in src:
                ops.append({"op": "add", "path": _pointer(path, key), "value": value})
            else:
                _diff(src[key], value, _pointer(path, key), ops)
    elif isinstance(src, list) and isinstance(dst, list):
        shorter = min(len(src), len(dst))
        start = 0
        while start < shorter and _same(src[start], dst[start]):
            start += 1
        end = 0
        while end < shorter - start and _same(src[-1 - end], dst[-1 - end]):
            end += 1
        old, new = src[start:len(src) - end], dst[start:len(dst) - end]
        for offset in range(min(len(old), len(new))):
            _diff(old[offset], new[offset], _pointer(path, start + offset), ops)
        ops.extend({"op": "remove", "path": _pointer(path, start + offset)}
                   for offset in reversed(range(len(new), len(old))))
        ops.extend({"op": "add", "path": _pointer(path, start + offset), "value": new[offset]}
                   for offset in range(len(old), len(new)))
    else:
        ops.append({"op": "replace", "path": path, "value": dst})


def _is_deployment(request: Obj) -> bool:
    kind = request.get("kind")
    return isinstance(kind, dict) and kind.get("group") == "apps" and kind.get("kind") == "Deployment"


def _annotations(obj: Obj) -> dict[str, Any]:
    """metadata.annotations; anything but a map (never sent by the API server) reads as none."""
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def admit(request: Obj, policy: Policy) -> Outcome:
    """Mutate an opted-in Deployment on CREATE/UPDATE; leave everything else untouched."""
    if not _is_deployment(request) or request.get("operation") not in ("CREATE", "UPDATE"):
        return Outcome()
    original = request.get("object") or {}
    try:
        annotations = _annotations(original)
        if not opted_in(annotations):
            return Outcome()
        if not all(isinstance(value, str) for value in annotations.values()):
            raise Refusal("metadata.annotations is invalid: it accepts a map of names to string values")
        if not isinstance(original.get("spec") or {}, dict):
            raise Refusal("spec must be an object")
        settings = resolve(annotations, mutation.check_template(original), policy)
        mutated, warnings = mutation.mutate(original, settings, policy)
    except Refusal as refusal:
        return Outcome(allowed=False, message=str(refusal), code=403, kind="refused")
    patch = json_patch(original, mutated)
    return Outcome(patch=patch, warnings=unknown_annotation_warnings(annotations) + warnings,
                   kind="mutated" if patch else "unchanged")


def answer(body: object, policy: Policy) -> tuple[Obj, str]:
    """The response and its kind; raises BadReview for a malformed body, never for anything else.

    An unexpected error is answered as a refusal with code 500 and the uid still set, as
    controller-runtime does; failurePolicy governs only unreachable webhooks.
    """
    request = parse_review(body)
    try:
        outcome = admit(request, policy)
    except Exception:
        logger.exception("unexpected error admitting %s/%s (uid %s)", request.get("namespace"),
                         request.get("name"), request["uid"])
        outcome = Outcome(allowed=False, code=500, kind="error",
                          message="customer-friendly webhook: internal error; see the webhook's logs")
    return build_response(request, outcome), outcome.kind
