"""The migration Job derived from a prepared Deployment, and how its status is read. Pure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from customer_friendly import contract as c
from customer_friendly.contract.policy import Policy
from customer_friendly.contract.settings import resolve
from customer_friendly.controller.migration import job_for, job_state
from customer_friendly.webhook.mutation import mutate

DEPLOYMENT = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "deployment.json").read_text())


def prepared() -> dict:
    obj = json.loads(json.dumps(DEPLOYMENT))
    obj["metadata"] |= {"namespace": "shop", "uid": "u-1"}
    settings = resolve(obj["metadata"]["annotations"], ["puma", "log-shipper"], Policy())
    return mutate(obj, settings, Policy())[0]


def test_the_job_runs_the_command_on_the_new_release_with_only_the_app_container() -> None:
    job = job_for(prepared(), "v42", "s3://b/{release}.tar.gz", "bin/rails db:migrate", "puma", "/app", 900,
                  c.migration_job_name("web", "v42"))
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["name"] == "web-migrate-v42"
    assert [ct["name"] for ct in pod["containers"]] == ["puma"]
    assert pod["containers"][0]["command"] == ["/bin/sh", "-c", "bin/rails db:migrate"]
    assert "readinessProbe" not in pod["containers"][0] and "lifecycle" not in pod["containers"][0]
    assert [ct["name"] for ct in pod["initContainers"]] == [c.FETCH_CONTAINER, "wait-for-db"]
    env = {e["name"]: e.get("value") for e in pod["initContainers"][0]["env"]}
    assert env["CFO_RELEASE"] == "v42" and env["CFO_SOURCE"] == "s3://b/{release}.tar.gz"
    assert {"name": c.CODE_VOLUME, "emptyDir": {}} in pod["volumes"]
    assert pod["restartPolicy"] == "Never" and "shareProcessNamespace" not in pod
    assert job["spec"]["template"]["metadata"]["labels"] == {"customer-friendly.dev/migration": "web"}
    assert job["spec"]["activeDeadlineSeconds"] == 900 and job["spec"]["backoffLimit"] == 0


@pytest.mark.parametrize(("conditions", "state"), [
    (None, ("running", "")),
    ([{"type": "Complete", "status": "True"}], ("succeeded", "")),
    ([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the "
      "specified backoff limit"}], ("failed", "Job has reached the specified backoff limit")),
    ([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}], ("failed", "the migrate-timeout passed")),
    ([{"type": "Failed", "status": "False"}], ("running", "")),
])
def test_job_states(conditions: list | None, state: tuple[str, str]) -> None:
    assert job_state({"status": {"conditions": conditions} if conditions else {}}) == state


def test_no_job_is_no_state() -> None:
    assert job_state(None) is None


def test_job_names_are_valid_and_distinct() -> None:
    long = c.migration_job_name("x" * 60, "v1.2_3")
    assert len(long) <= 63 and long != c.migration_job_name("x" * 60, "v1.2_4")
    assert c.migration_job_name("web", "V1.2_3") == "web-migrate-v1-2-3"
