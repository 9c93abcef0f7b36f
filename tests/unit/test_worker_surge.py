"""The worker surge's rules: who gets it, what is sent, and when Puma is back to its size."""

from __future__ import annotations

import pytest

from customer_friendly import contract as c
from customer_friendly.agent.puma import Process, PumaView, Stats, shrunk
from customer_friendly.contract.agent_api import RestartOptions
from customer_friendly.contract.policy import Policy
from customer_friendly.contract.settings import Refusal, resolve

BASE = {c.ENABLED: "true", c.RELEASE: "v2", c.SOURCE: "s3://bucket/app/{release}.tar.gz"}


@pytest.mark.parametrize(("annotations", "policy", "surge"), [
    pytest.param({}, Policy(), True, id="phased restarts surge by default"),
    pytest.param({c.WORKER_SURGE: "false"}, Policy(), False, id="the annotation turns it off"),
    pytest.param({}, Policy(worker_surge=False), False, id="the policy turns it off cluster-wide"),
    pytest.param({c.WORKER_SURGE: "false"}, Policy(worker_surge=False), False, id="off and off"),
    pytest.param({c.RESTART: "hot"}, Policy(), False, id="hot restarts replace every worker at once: no surge"),
    pytest.param({c.RESTART: "drain"}, Policy(), False, id="drain restarts stop a process: no surge"),
])
def test_who_gets_a_surge_worker(annotations: dict[str, str], policy: Policy, surge: bool) -> None:
    assert resolve({**BASE, **annotations}, ["app"], policy).restart_options().surge is surge


def test_a_deployment_cannot_turn_the_surge_on_against_the_policy() -> None:
    with pytest.raises(Refusal, match=r"worker-surge.*cluster policy"):
        resolve({**BASE, c.WORKER_SURGE: "true"}, ["app"], Policy(worker_surge=False))
    with pytest.raises(Refusal, match='"true" or "false"'):
        resolve({**BASE, c.WORKER_SURGE: "yes"}, ["app"], Policy())


def test_the_surge_travels_on_the_wire_only_when_asked() -> None:
    assert RestartOptions(surge=True).to_json() == {"restart": "phased", "surge": True}
    assert "surge" not in RestartOptions().to_json()
    assert RestartOptions.from_json({"surge": True}).surge is True
    with pytest.raises(ValueError, match="surge must be true or false"):
        RestartOptions.from_json({"surge": "yes"})


def view(workers: int) -> PumaView:
    master = Process(10, 1, 100, "puma 5.6.5 (tcp://0.0.0.0:3000) [app]")
    return PumaView(master, tuple(Process(20 + i, 10, 200 + i, f"puma: cluster worker {i}: 10 [app]")
                                  for i in range(workers)))


@pytest.mark.parametrize(("workers", "stats", "back"), [
    pytest.param(2, None, True, id="two worker processes, no control app"),
    pytest.param(3, None, False, id="the extra worker still runs"),
    pytest.param(2, Stats(1, 2, 2, 0), True, id="stats agree"),
    pytest.param(2, Stats(1, 3, 3, 0), False, id="Puma still counts three"),
    pytest.param(2, Stats(1, 2, 1, 0), False, id="one is still booting"),
])
def test_puma_is_back_to_its_size_when_processes_and_stats_agree(workers: int, stats: Stats | None,
                                                                 back: bool) -> None:
    assert shrunk(view(workers), stats, 2) is back
    assert shrunk(None, stats, 2) is False
