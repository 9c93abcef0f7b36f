"""traffic: drain, the pure parts: the annotation, the readiness gate the webhook injects, and
the gate and EndpointSlices as the controller reads and writes them. The controller's plan is
in test_plan.py; the restart under load on the real node in tests/node/test_traffic_drain.py."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from customer_friendly import contract as c
from customer_friendly.contract.agent_api import AgentEnv
from customer_friendly.contract.policy import Policy
from customer_friendly.contract.readiness import Gate, gate_condition, health_url, read_gate, ready_endpoint_pods
from customer_friendly.contract.settings import Refusal, resolve
from tests.unit.test_mutation import deployment, pod, run

BASE = {c.ENABLED: "true", c.RELEASE: "v1", c.SOURCE: "s3://releases/{release}.tgz"}
USERS_GATE = {"conditionType": "target-health.elbv2.k8s.aws/web"}


def test_traffic_is_live_by_default_and_drain_on_request() -> None:
    assert resolve(BASE, ["app"], Policy()).drains_traffic is False
    settings = resolve({**BASE, c.TRAFFIC: "drain", c.SETTLE_SECONDS: "30"}, ["app"], Policy())
    assert settings.drains_traffic and settings.settle_seconds == 30
    assert resolve({**BASE, c.TRAFFIC: "drain"}, ["app"], Policy()).settle_seconds == c.DEFAULT_SETTLE_SECONDS


@pytest.mark.parametrize(("annotations", "says"), [
    ({c.TRAFFIC: "Drain"}, "live (serve through the restart, the default) or drain"),
    ({c.TRAFFIC: ""}, "live (serve through the restart"),
    ({c.SETTLE_SECONDS: "-1"}, "whole seconds from 0 to 3600"),
    ({c.SETTLE_SECONDS: "5s"}, "whole seconds from 0 to 3600"),
])
def test_a_bad_traffic_setting_is_refused_with_what_it_accepts(annotations: dict[str, str], says: str) -> None:
    with pytest.raises(Refusal, match="accepts") as refusal:
        resolve({**BASE, **annotations}, ["app"], Policy())
    assert says in str(refusal.value)


def test_drain_puts_the_gate_in_the_pod_template_once_beside_the_users_own() -> None:
    obj = deployment(traffic="drain")
    obj["spec"]["template"]["spec"]["readinessGates"] = [USERS_GATE]
    out, _ = run(obj)
    assert pod(out)["readinessGates"] == [USERS_GATE, {"conditionType": c.IN_PLACE_READY}]
    again, _ = run(copy.deepcopy(out))
    assert pod(again)["readinessGates"] == pod(out)["readinessGates"]


def test_live_traffic_has_no_gate_and_going_back_to_live_removes_ours_only() -> None:
    out, _ = run(deployment())
    assert "readinessGates" not in pod(out)
    drained, _ = run(deployment(traffic="drain"))
    drained["metadata"]["annotations"].pop(c.TRAFFIC)
    live, _ = run(drained)
    assert "readinessGates" not in pod(live)
    mixed = deployment()
    mixed["spec"]["template"]["spec"]["readinessGates"] = [USERS_GATE, {"conditionType": c.IN_PLACE_READY}]
    assert pod(run(mixed)[0])["readinessGates"] == [USERS_GATE]


def a_pod(conditions: list[dict[str, Any]], gated: bool = True) -> dict[str, Any]:
    gates = [{"conditionType": c.IN_PLACE_READY}] if gated else []
    return {"spec": {"readinessGates": gates}, "status": {"conditions": conditions}}


def test_the_gate_is_read_from_the_pod_spec_and_its_condition() -> None:
    closed = gate_condition(False, "v2", dt.datetime(2026, 12, 2, 5, 0, 0, tzinfo=dt.UTC))
    assert closed["status"] == "False" and closed["reason"] == "Draining" and "v2" in closed["message"]
    assert read_gate(a_pod([{"type": "Ready", "status": "False"}, closed])) == \
        Gate(True, False, dt.datetime(2026, 12, 2, 5, 0, 0, tzinfo=dt.UTC).timestamp())
    assert read_gate(a_pod([gate_condition(True, "v2")])) == Gate(True, True, None)
    assert read_gate(a_pod([])) == Gate(True, None, None)
    assert read_gate(a_pod([], gated=False)) == Gate(False, None, None)
    assert read_gate({}) == Gate()


def endpoint(name: str, ready: bool | None, kind: str = "Pod") -> dict[str, Any]:
    conditions = {} if ready is None else {"ready": ready}
    return {"addresses": ["10.0.0.1"], "conditions": conditions, "targetRef": {"kind": kind, "name": name}}


def test_a_pod_is_in_the_endpoints_while_a_slice_lists_it_as_ready() -> None:
    slices: list[dict[str, Any]] = [{"endpoints": [endpoint("web-a", True), endpoint("web-b", False)]},
              {"endpoints": [endpoint("web-c", None), endpoint("node-1", True, kind="Node")]},
              {"endpoints": None}, {}]
    assert ready_endpoint_pods(slices) == {"web-a", "web-c"}


@pytest.mark.parametrize(("container", "url"), [
    ({"ports": [{"name": "http", "containerPort": 3000}],
      "readinessProbe": {"httpGet": {"path": "/up", "port": "http"}}}, "http://127.0.0.1:3000/up"),
    ({"readinessProbe": {"httpGet": {"port": 8080}}}, "http://127.0.0.1:8080/"),
    ({"readinessProbe": {"httpGet": {"port": "8443", "scheme": "HTTPS", "path": "health"}}},
     "https://127.0.0.1:8443/health"),
    ({"readinessProbe": {"httpGet": {"port": "missing"}}}, None),
    ({"readinessProbe": {"tcpSocket": {"port": 3000}}}, None),
    ({}, None),
], ids=["named port", "number, default path", "https, relative path", "unknown port name", "tcp", "none"])
def test_the_readiness_probe_becomes_a_url_inside_the_pod(container: dict[str, Any], url: str | None) -> None:
    assert health_url(container) == url


def test_with_drain_the_agent_is_told_the_apps_readiness_url() -> None:
    def agent_env(obj: dict[str, Any]) -> dict[str, Any]:
        agent = next(ct for ct in pod(obj)["initContainers"] if ct["name"] == c.AGENT_CONTAINER)
        return {e["name"]: e.get("value") for e in agent["env"]}

    probed = deployment(traffic="drain")
    app = probed["spec"]["template"]["spec"]["containers"][0]
    app["ports"] = [{"name": "web", "containerPort": 3000}]
    app["readinessProbe"] = {"httpGet": {"path": "/up", "port": "web"}}
    assert agent_env(run(probed)[0])[AgentEnv.HEALTH_URL] == "http://127.0.0.1:3000/up"
    live = copy.deepcopy(probed)
    live["metadata"]["annotations"].pop(c.TRAFFIC)
    assert AgentEnv.HEALTH_URL not in agent_env(run(live)[0])
