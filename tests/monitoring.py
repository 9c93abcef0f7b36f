"""What manifests/monitoring asks of the metrics, and what the components export, as sets of
series names; shared by the unit tests (the parsing) and the integration test (the real scrape).

PromQL is read loosely but correctly for our use: string literals, label matchers, range and
subquery brackets, Grafana variables and the label lists of `by`, `without`, `on`, `ignoring`,
`group_left` and `group_right` are dropped; of the identifiers left, one followed by `(` is a
function or an aggregation, and keywords are not metrics. What remains names a series.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

MONITORING = Path(__file__).resolve().parents[1] / "manifests" / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                      "offset", "bool", "atan2", "start", "end", "inf", "nan"})
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TOKENS = re.compile(r"(?P<number>\d[\w.]*)|(?P<name>[A-Za-z_:][\w:]*)(?P<call>\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects."""
    text = _STRINGS.sub(" ", expr)
    text = _VARIABLES.sub(" ", text)
    for pattern in (_MATCHERS, _BRACKETS, _LABEL_LISTS):
        text = pattern.sub(" ", text)
    return {m["name"] for m in _TOKENS.finditer(text)
            if m["name"] and not m["call"] and m["name"].lower() not in KEYWORDS}


def rule_documents(path: Path = RULES) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def alerts(path: Path = RULES) -> list[dict[str, Any]]:
    return [rule for doc in rule_documents(path) if doc.get("kind") == "PrometheusRule"
            for group in doc["spec"]["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    """Every query of every panel, rows' nested panels included."""
    def panels(items: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels") or [])
    return [target["expr"] for panel in panels(json.loads(path.read_text())["panels"])
            for target in panel.get("targets") or [] if target.get("expr")]


def used_exprs() -> list[str]:
    """Every expression of the rules (recording rules too) and of the dashboard."""
    rules = [rule["expr"] for doc in rule_documents() if doc.get("kind") == "PrometheusRule"
             for group in doc["spec"]["groups"] for rule in group["rules"]]
    return rules + dashboard_exprs()


_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "summary": ("", "_sum", "_count", "_created"), "info": ("_info",), "gaugehistogram": ("_bucket",
             "_gsum", "_gcount")}


def exported_names(exposition: str) -> set[str]:
    """The series names a /metrics text offers: each sample's name, and for a family declared
    with no sample yet (a labelled counter before its first increment, a gauge with no series
    now) the names its type gives it, as prometheus_client would write them."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def unknown(exprs: Iterable[str], exported: set[str]) -> dict[str, set[str]]:
    """The expressions that name a series nobody exports, with those names."""
    found = {expr: metric_names(expr) - exported for expr in exprs}
    return {expr: names for expr, names in found.items() if names}
