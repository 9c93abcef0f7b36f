"""The monitoring files without a cluster: the PromQL reading that the integration test relies
on (tests/monitoring.py), a check that fails on a metric nobody exports, and the promises of the
rule file (every alert labelled and annotated)."""

from __future__ import annotations

import pytest

from tests.monitoring import alerts, dashboard_exprs, exported_names, metric_names, rule_documents, unknown


@pytest.mark.parametrize(("expr", "names"), [
    ("up", {"up"}),
    ('max by (namespace, deployment) (cfo_x{phase!="Paused", a=~"b|c"}) == 1', {"cfo_x"}),
    ("time() - max by (namespace, deployment, phase) (cfo_started{phase!=\"Paused\"}) > 1800", {"cfo_started"}),
    ("sum(increase(cfo_errors_total[10m])) > 10", {"cfo_errors_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(cfo_seconds_bucket[$__rate_interval])))", {"cfo_seconds_bucket"}),
    ("sum without (pod) (rate(a_total[5m:30s] offset 1h)) / ignoring (x) group_left (y) b", {"a_total", "b"}),
    ("count(cfo_a) or vector(0)", {"cfo_a"}),
    ("a and on (instance) b unless c", {"a", "b", "c"}),
    # A label value that looks like a metric, or holds braces, names nothing.
    ('sum(cfo_a{outcome="error_total", x="{not_a_metric}"})', {"cfo_a"}),
    ("rate(ns:recorded:rate5m[5m]) > 1e-3", {"ns:recorded:rate5m"}),
    ("sum (rate (cfo_a_total [5m]))", {"cfo_a_total"}),
    ("1 > bool 0.5", set()),
    ("{__name__=~\"cfo_.*\"}", set()),
])
def test_metric_names_are_the_identifiers_that_select_series(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


EXPOSITION = """\
# HELP cfo_rollouts_total Rollouts
# TYPE cfo_rollouts_total counter
# HELP cfo_seconds Time
# TYPE cfo_seconds histogram
cfo_seconds_bucket{le="+Inf"} 0.0
cfo_seconds_count 0.0
cfo_seconds_sum 0.0
# HELP cfo_started Start
# TYPE cfo_started gauge
"""


def test_exported_names_follow_the_family_types_even_without_samples() -> None:
    names = exported_names(EXPOSITION)
    assert {"cfo_rollouts_total", "cfo_seconds_bucket", "cfo_seconds_sum", "cfo_seconds_count", "cfo_started"} <= names
    assert "cfo_rollouts" not in names and "cfo_seconds" not in names


@pytest.mark.parametrize("wrong", [
    "sum(rate(cfo_rollouts[5m]))",                       # a counter without its _total
    "histogram_quantile(0.99, sum by (le) (rate(cfo_seconds[5m])))",  # a histogram without _bucket
    'max(cfo_startd{phase="Paused"}) > 0',               # a typo
])
def test_a_rule_naming_a_metric_nobody_exports_is_caught(wrong: str) -> None:
    right = "sum(rate(cfo_rollouts_total[5m])) + max(cfo_started)"
    assert unknown([right, wrong], exported_names(EXPOSITION)) == {wrong: metric_names(wrong)}


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook() -> None:
    found = alerts()
    assert len(found) >= 7
    for alert in found:
        assert alert["labels"]["severity"] in ("info", "warning", "critical"), alert["alert"]
        for key in ("summary", "description", "runbook"):
            assert alert["annotations"][key].strip(), (alert["alert"], key)
        assert metric_names(alert["expr"]), alert["alert"]


def test_the_alerts_cover_what_the_readme_promises() -> None:
    assert {a["alert"] for a in alerts()} == {
        "CustomerFriendlyRolloutFailed", "CustomerFriendlyRolloutStuck", "CustomerFriendlyAgentCallsFailing",
        "CustomerFriendlyWebhookRefusing", "CustomerFriendlyWebhookErrors", "CustomerFriendlyWebhookSlow",
        "CustomerFriendlyPolicyInvalid"}


def test_the_monitoring_objects_are_plain_and_in_the_install_namespace() -> None:
    docs = rule_documents()
    assert [d["kind"] for d in docs] == ["PrometheusRule"]
    for doc in docs:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["metadata"]["namespace"] == "customer-friendly-system"


def test_every_dashboard_panel_queries_something() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 12
    assert all(metric_names(e) for e in exprs)
