"""The Flask glue, through Flask's own test client (in-process HTTP, no mocks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from werkzeug.test import TestResponse

from customer_friendly.webhook.app import create_app
from customer_friendly.webhook.config import WebhookConfig

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "deployment.json").read_text())
REVIEW = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "abc", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
    "operation": "CREATE", "namespace": "shop", "name": "web", "object": FIXTURE}}


def body(response: TestResponse) -> dict[str, Any]:
    data = response.get_json()
    assert isinstance(data, dict), response.data[:200]
    return data


def test_create_app_needs_no_arguments_and_serves_healthz() -> None:
    response = create_app().test_client().get("/healthz")
    assert response.status_code == 200 and body(response)["status"] == "ok"


def test_mutate_answers_a_review_with_a_patch() -> None:
    response = create_app().test_client().post("/mutate", json=REVIEW)
    assert response.status_code == 200
    assert body(response)["response"]["uid"] == "abc"
    assert body(response)["response"]["patchType"] == "JSONPatch"


def test_a_body_that_is_not_json_is_a_400() -> None:
    response = create_app().test_client().post("/mutate", data=b"{nope", content_type="application/json")
    assert response.status_code == 400
    assert "malformed AdmissionReview" in body(response)["error"]


def test_json_nested_too_deeply_to_decode_is_a_400() -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    response = create_app().test_client().post("/mutate", data=nested, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in body(response)["error"]


def test_a_hostile_deployment_is_refused_with_its_uid_not_a_500() -> None:
    hostile = json.loads(json.dumps(REVIEW))
    hostile["request"]["object"]["metadata"]["annotations"]["customer-friendly.dev/canary"] = "9" * 5000
    response = create_app().test_client().post("/mutate", json=hostile)
    assert response.status_code == 200
    assert body(response)["response"]["uid"] == "abc" and body(response)["response"]["allowed"] is False
    assert "customer-friendly.dev/canary" in body(response)["response"]["status"]["message"]


def test_a_review_without_a_uid_is_a_400() -> None:
    response = create_app().test_client().post("/mutate", json={**REVIEW, "request": {"operation": "CREATE"}})
    assert response.status_code == 400


def test_a_body_over_the_size_limit_is_a_413() -> None:
    app = create_app(WebhookConfig(max_review_bytes=1024))
    response = app.test_client().post("/mutate", data=b"{" + b" " * 2048 + b"}", content_type="application/json")
    assert response.status_code == 413


def test_metrics_count_reviews_by_outcome() -> None:
    client = create_app().test_client()
    client.post("/mutate", json=REVIEW)
    client.post("/mutate", data=b"x", content_type="application/json")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'cfo_webhook_admission_reviews_total{outcome="mutated"} 1.0' in text
    assert 'cfo_webhook_admission_reviews_total{outcome="bad_request"} 1.0' in text
    assert "cfo_webhook_policy_invalid 0.0" in text


def test_an_invalid_policy_edit_shows_on_metrics_without_any_review(tmp_path: Path) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "preStopSeconds").write_text("15")
    client = create_app(WebhookConfig(policy_path=policy, policy_check_seconds=0)).test_client()
    assert "cfo_webhook_policy_invalid 0.0" in client.get("/metrics").get_data(as_text=True)
    (policy / "preStopSeconds").write_text("soon")
    assert "cfo_webhook_policy_invalid 1.0" in client.get("/metrics").get_data(as_text=True)
    (policy / "preStopSeconds").write_text("20")
    assert "cfo_webhook_policy_invalid 0.0" in client.get("/metrics").get_data(as_text=True)
