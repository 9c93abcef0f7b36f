"""The controller's side of the agent API (issue 10 item 12): the agents' in-memory certificates
are pinned per agent container, and a different certificate for the same agent is refused
before any request is sent. Real mutual TLS against the real server, in-process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from customer_friendly.agent.config import AgentConfig
from customer_friendly.agent.server import AgentServer, ServerLimits, tls_context
from customer_friendly.certs.names import CONTROLLER_CN
from customer_friendly.contract.agent_api import ReleaseRequest
from customer_friendly.controller.agents import AgentClient, AgentError, Pins, agent_identity
from tests.unit.test_agent_server import FakeAgent, Installation, Running, config_for, installation, running

__all__ = ["installation", "running"]  # fixtures


def pod(uid: str | None, *statuses: tuple[str, str, str]) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for where, name, container_id in statuses:
        status.setdefault(where, []).append({"name": name, "containerID": container_id})
    return {"metadata": {"uid": uid} if uid else {}, "status": status}


@pytest.mark.parametrize(("given", "expected"), [
    (pod("u1", ("initContainerStatuses", "cfo-agent", "containerd://a")), "u1/containerd://a"),
    (pod("u1", ("containerStatuses", "puma", "containerd://p"), ("containerStatuses", "cfo-agent", "containerd://b")),
     "u1/containerd://b"),
    (pod("u1", ("containerStatuses", "puma", "containerd://p")), None),
    (pod("u1", ("initContainerStatuses", "cfo-agent", "")), None),  # not started yet
    (pod(None, ("initContainerStatuses", "cfo-agent", "containerd://a")), None),
    ({}, None),
], ids=["native sidecar", "plain container", "no agent", "agent not started", "no uid", "nothing"])
def test_an_agent_is_identified_by_its_pod_and_container(given: dict[str, Any], expected: str | None) -> None:
    assert agent_identity(given) == expected


def test_pins_keep_the_first_certificate_and_forget_the_oldest() -> None:
    pins = Pins(capacity=2)
    assert pins.check("a", "1") is None and pins.check("a", "1") is None
    assert pins.check("a", "2") == "1"
    pins.check("b", "1")
    pins.check("c", "1")
    assert pins.check("a", "3") is None  # forgotten, so pinned anew


def client(running: Running, name: str = "controller") -> AgentClient:
    return AgentClient(running.certs / f"{name}.crt", running.certs / f"{name}.key", timeout=3)


def restart_on_same_port(running: Running, installation: Installation, tmp_path: Path) -> AgentServer:
    """The same address, a new agent process: a new key made in memory."""
    port = running.port
    running.server.shutdown()
    running.server.server_close()
    context, _ = tls_context(config_for(tmp_path, installation.ca.cert_pem().decode()))
    limits = ServerLimits.of(AgentConfig.from_env(env={}))
    server = AgentServer(FakeAgent(), context, ("127.0.0.1", port), limits, CONTROLLER_CN)  # type: ignore[arg-type]  # a stand-in Agent
    threading.Thread(target=server.serve_forever, daemon=True).start()
    running.server = server
    return server


def test_a_new_certificate_for_the_same_agent_is_refused_before_any_request(
        running: Running, installation: Installation, tmp_path: Path) -> None:
    agents = client(running)
    assert agents.status("127.0.0.1", running.port, identity="pod-1/c1").release == "v1"
    restart_on_same_port(running, installation, tmp_path)
    with pytest.raises(AgentError, match="not the agent first seen for this pod"):
        agents.release("127.0.0.1", running.port, ReleaseRequest("v2", "file:///a/{release}.tar.gz"),
                       identity="pod-1/c1")
    assert running.server.agent.asked == []  # type: ignore[attr-defined]  # the stand-in counts; nothing was sent
    # The agent container restarted (a new container id): its new key is pinned.
    assert agents.status("127.0.0.1", running.port, identity="pod-1/c2").release == "v1"


def test_an_address_reused_by_another_pod_gets_its_own_pin(running: Running) -> None:
    agents = client(running)
    agents.status("127.0.0.1", running.port, identity="pod-1/c1")
    assert agents.status("127.0.0.1", running.port, identity="pod-2/c1").release == "v1"


def test_a_client_certificate_that_is_not_the_controllers_gets_no_answer(running: Running) -> None:
    with pytest.raises(AgentError):
        client(running, "webhook").status("127.0.0.1", running.port)
    with pytest.raises(AgentError, match="403: this client certificate is not accepted"):
        client(running, "ca").status("127.0.0.1", running.port)
