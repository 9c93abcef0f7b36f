"""AdmissionReview in, AdmissionReview out: the webhook's logic without HTTP.

`admit` decides; `build_response` is the only place that shapes a response, and it always
carries the request's uid. The patch is `jsonpatch.make_patch(original, mutated)`, so no
JSON-Pointer is ever typed by hand and an unchanged object yields no patch at all.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from contract import AGENT_CONTAINER
from webhook import mutation
from webhook.policy import Policy
from webhook.settings import Refusal, opted_in, resolve, unknown_annotation_warnings

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

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


def _is_deployment(request: Obj) -> bool:
    kind = request.get("kind") or {}
    return kind.get("group") == "apps" and kind.get("kind") == "Deployment"


def admit(request: Obj, policy: Policy) -> Outcome:
    """Mutate an opted-in Deployment on CREATE/UPDATE; leave everything else untouched."""
    if not _is_deployment(request) or request.get("operation") not in ("CREATE", "UPDATE"):
        return Outcome()
    original = request.get("object") or {}
    annotations = (original.get("metadata") or {}).get("annotations") or {}
    try:
        if not opted_in(annotations):
            return Outcome()
        template = ((original.get("spec") or {}).get("template") or {}).get("spec") or {}
        containers = [ct.get("name", "") for ct in template.get("containers") or []
                      if ct.get("name") != AGENT_CONTAINER]
        settings = resolve(annotations, containers, policy)
        mutated, warnings = mutation.mutate(original, settings, policy)
    except Refusal as refusal:
        return Outcome(allowed=False, message=str(refusal), code=403, kind="refused")
    patch = jsonpatch.make_patch(original, mutated).patch
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
