"""Preflight judgements and install rendering: pure functions, table-driven."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from customer_friendly.admin.install import fill_in, order
from customer_friendly.admin.preflight import (
    efs_checks,
    parse_version,
    render,
    source_buckets,
    storage_class_checks,
    version_checks,
)
from customer_friendly.contract.policy import Policy


@pytest.mark.parametrize(("version", "policy", "ok"), [
    ("v1.35.4", Policy(), [True, True]),
    ("v1.29.0-eks-abc", Policy(), [True, False]),
    ("v1.28.9", Policy(), [False, False]),
    ("v1.28.9", Policy(native_sidecars=False, pre_stop_sleep_action=False), [True, True]),
])
def test_version_checks_tell_which_fallbacks_the_policy_needs(version: str, policy: Policy, ok: list[bool]) -> None:
    assert [c.ok for c in version_checks(version, policy)] == ok


def test_an_unreadable_version_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_version("unknown")


SC = {"metadata": {"name": "efs-sc"}, "provisioner": "efs.csi.aws.com",
      "parameters": {"provisioningMode": "efs-ap", "fileSystemId": "fs-1"}}


@pytest.mark.parametrize(("classes", "policy", "failed"), [
    ([SC], Policy(), []),
    ([], Policy(), ["StorageClass efs-sc"]),
    ([{**SC, "parameters": {"provisioningMode": "efs-ip"}}], Policy(), ["EFS dynamic provisioning"]),
    ([{**SC, "provisioner": "ebs.csi.aws.com"}], Policy(), ["StorageClass efs-sc"]),
    ([], Policy(volume="emptyDir"), []),
])
def test_storage_class_checks(classes: list, policy: Policy, failed: list[str]) -> None:
    assert [c.name for c in storage_class_checks(policy, classes) if not c.ok] == failed


def test_efs_checks_count_access_points_against_the_pods_that_need_them() -> None:
    systems = [{"FileSystemId": "fs-1"}]
    assert all(c.ok for c in efs_checks("fs-1", systems, 2, 990, 1000, 10))
    assert [c.name for c in efs_checks("fs-1", systems, 0, 995, 1000, 10) if not c.ok] == [
        "EFS mount targets", "EFS access points"]
    assert not efs_checks("fs-9", systems, 1, 0, 1000, 1)[0].ok


def test_source_buckets_come_from_opted_in_s3_sources() -> None:
    deployments = [{"metadata": {"annotations": {"customer-friendly.dev/source": "s3://a/x/{release}.tar.gz"}}},
                   {"metadata": {"annotations": {"customer-friendly.dev/source": "https://h/{release}.tar.gz"}}}]
    assert source_buckets(deployments) == {"a"}


def test_the_summary_never_looks_like_a_test_runner_line() -> None:
    text = render(efs_checks("fs-1", [{"FileSystemId": "fs-1"}], 0, 0, 1000, 1))
    assert text.splitlines()[-1] == "2 of 3 checks passed; fix the 1 marked FAIL before installing"


def test_fill_in_sets_the_ca_bundle_and_the_agents_ca_and_order_puts_the_webhook_last() -> None:
    objects: list[dict[str, Any]] = [
        {"kind": "MutatingWebhookConfiguration", "metadata": {"name": "m"}, "webhooks": [{"clientConfig": {}}]},
        {"kind": "ConfigMap", "metadata": {"name": "customer-friendly-policy"}, "data": {"agentClientCA": ""}},
        {"kind": "Namespace", "metadata": {"name": "customer-friendly-system"}},
    ]
    filled = order(fill_in(objects, b"PEM", keep_policy=False))
    assert [o["kind"] for o in filled] == ["Namespace", "ConfigMap", "MutatingWebhookConfiguration"]
    assert filled[1]["data"]["agentClientCA"] == "PEM"
    assert base64.b64decode(filled[2]["webhooks"][0]["clientConfig"]["caBundle"]) == b"PEM"
    kept = fill_in(objects, b"PEM", keep_policy=True)
    assert "ConfigMap" not in [o["kind"] for o in kept]


def test_a_registry_retags_our_images_and_nothing_else() -> None:
    objects = [
        {"kind": "Deployment", "metadata": {"name": "w"}, "spec": {"template": {"spec": {"containers": [
            {"image": "ghcr.io/customer-friendly/webhook:0.1.0"}, {"image": "envoyproxy/envoy:v1"}]}}}},
        {"kind": "ConfigMap", "metadata": {"name": "customer-friendly-policy"},
         "data": {"agentImage": "ghcr.io/customer-friendly/agent:0.1.0"}},
    ]
    filled = fill_in(objects, b"PEM", keep_policy=False, registry="1234.dkr.ecr.eu-west-1.amazonaws.com/cfo/")
    containers = filled[0]["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["1234.dkr.ecr.eu-west-1.amazonaws.com/cfo/webhook:0.1.0",
                                                "envoyproxy/envoy:v1"]
    assert filled[1]["data"]["agentImage"] == "1234.dkr.ecr.eu-west-1.amazonaws.com/cfo/agent:0.1.0"
