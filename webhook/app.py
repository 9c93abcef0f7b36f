"""Flask glue: HTTP in, `review.answer` out. No admission logic lives here.

`create_app()` with no arguments serves the built-in policy defaults unless the environment
names a policy file (CFO_POLICY_PATH).
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from customer_friendly.contract.policy_source import PolicySource
from customer_friendly.webhook.config import WebhookConfig
from customer_friendly.webhook.review import BadReview, answer

logger = logging.getLogger(__name__)


def create_app(config: WebhookConfig | None = None) -> Flask:
    config = config or WebhookConfig.from_env()
    policy = PolicySource(config.policy_path, config.policy_check_seconds)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_review_bytes

    registry = CollectorRegistry()
    reviews = Counter("cfo_webhook_admission_reviews", "Admission reviews answered, by outcome",
                      ["outcome"], registry=registry)
    latency = Histogram("cfo_webhook_admission_duration_seconds", "Time to answer one review",
                        registry=registry, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
    policy_invalid = Gauge("cfo_webhook_policy_invalid",
                           "1 while the policy file is invalid and the last good policy is in force",
                           registry=registry)

    def invalid() -> float:
        # The file is re-read when a review asks for the policy; a scrape asks too, so an invalid
        # edit shows up even while no Deployment is being applied.
        policy.current()
        return 1.0 if policy.last_error else 0.0

    policy_invalid.set_function(invalid)

    @app.post("/mutate")
    def mutate() -> tuple[Response, int]:
        started = time.perf_counter()
        try:
            try:
                body = request.get_json(force=True, silent=False)
            except RecursionError as err:  # nesting deeper than the JSON decoder's recursion limit
                raise BadReview("JSON nested too deeply") from err
            review, kind = answer(body, policy.current())
        except RequestEntityTooLarge:
            reviews.labels("too_large").inc()
            return jsonify(error=f"AdmissionReview larger than {config.max_review_bytes} bytes"), 413
        except (BadRequest, BadReview) as err:
            reviews.labels("bad_request").inc()
            message = err.description if isinstance(err, BadRequest) else str(err)
            return jsonify(error=f"malformed AdmissionReview: {message}"), 400
        reviews.labels(kind).inc()
        latency.observe(time.perf_counter() - started)
        response = review["response"]
        if kind in ("refused", "error"):
            logger.info("%s %s/%s: %s", kind, body["request"].get("namespace"), body["request"].get("name"),
                        response["status"]["message"])
        return jsonify(review), 200

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify(status="ok", policyError=policy.last_error), 200

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    return app
