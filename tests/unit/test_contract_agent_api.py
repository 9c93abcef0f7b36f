"""The agent API's one schema: what the controller sends is what the agent parses, and back."""

from __future__ import annotations

import pytest

from customer_friendly.contract.agent_api import AgentStatus, ReleaseRequest, RestartOptions
from customer_friendly.contract.policy import Policy
from customer_friendly.contract.settings import resolve

SOURCE = "s3://bucket/app/{release}.tar.gz"


@pytest.mark.parametrize(("body", "message"), [
    ({"source": "file:///r/{release}.tar.gz"}, "release must be"),
    ({"release": "v1\n", "source": "file:///r/{release}.tar.gz"}, "release must be"),
    ({"release": "v1", "source": "ftp://x/{release}"}, "source must be"),
    ({"release": "v1", "source": "file:///r/v1.tar.gz"}, "source must be"),
    ({"release": "v1", "source": "file:///r/{release}.tar.gz", "restart": "rolling"}, "restart must be"),
    ({"release": "v1", "source": "file:///r/{release}.tar.gz", "deadlineSeconds": 0}, "deadlineSeconds"),
    ({"release": "v1", "source": "file:///r/{release}.tar.gz", "deadlineSeconds": True}, "deadlineSeconds"),
    ({"release": "v1", "source": "file:///r/{release}.tar.gz", "process": "(["}, "process must be"),
    ({"release": "v1", "source": "file:///r/{release}.tar.gz", "quietSignal": "KILL"}, "quietSignal"),
    ({"release": "v1", "source": "file:///r/{release}.tar.gz", "drainSeconds": -1}, "drainSeconds"),
])
def test_bad_release_requests_name_the_field(body: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReleaseRequest.from_json(body)


def test_a_good_release_request() -> None:
    request = ReleaseRequest.from_json({"release": "v2", "source": SOURCE, "restart": "hot",
                                        "allowHot": True, "deadlineSeconds": 30})
    assert request == ReleaseRequest("v2", SOURCE, RestartOptions(restart="hot", allow_hot=True, deadline_seconds=30))


@pytest.mark.parametrize("options", [
    RestartOptions(),
    RestartOptions(restart="hot", allow_hot=True, deadline_seconds=12.5),
    RestartOptions(restart="drain", process="sidekiq", quiet_signal="TSTP", drain_seconds=45),
    RestartOptions(restart="signal:HUP", drain_seconds=0),
])
def test_a_release_request_round_trips_through_its_json(options: RestartOptions) -> None:
    request = ReleaseRequest("v7", SOURCE, options)
    assert ReleaseRequest.from_json(request.to_json()) == request


def test_phased_and_hot_requests_carry_no_drain_options() -> None:
    assert ReleaseRequest("v1", SOURCE).to_json() == {"release": "v1", "source": SOURCE, "restart": "phased"}


def test_the_controller_asks_with_the_restart_options_the_annotations_say() -> None:
    annotations = {"customer-friendly.dev/enabled": "true", "customer-friendly.dev/release": "v2",
                   "customer-friendly.dev/source": SOURCE, "customer-friendly.dev/restart": "drain",
                   "customer-friendly.dev/process": "^sidekiq", "customer-friendly.dev/quiet-signal": "TSTP",
                   "customer-friendly.dev/drain-seconds": "20"}
    options = resolve(annotations, ["app"], Policy()).restart_options()
    assert options == RestartOptions(restart="drain", process="^sidekiq", quiet_signal="TSTP", drain_seconds=20)
    assert RestartOptions.from_json(options.to_json()) == options


def test_a_status_round_trips_and_tolerates_other_agents_versions() -> None:
    status = AgentStatus("failed", target="v2", release="v1", error="boom", previous="v0", steps=("TSTP sent",),
                         reverted=True, puma_restored=True, asked={"v2": 1}, puma={"mode": "cluster"})
    assert AgentStatus.from_json(status.to_json()) == status
    assert AgentStatus.from_json({"state": "idle", "release": "v1", "added-later": 1}) == AgentStatus("idle",
                                                                                                    release="v1")
