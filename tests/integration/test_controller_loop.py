"""The controller's plumbing against a real API server: the Lease (the caches and their watches:
test_controller_cache.py)."""

from __future__ import annotations

import time

import pytest
from kubernetes import client, config

from customer_friendly.controller.loop import Lease
from testbed.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def api_client(plane: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(plane.kubeconfig))


def test_only_one_replica_holds_the_lease_and_a_release_hands_it_over(cluster: ControlPlane) -> None:
    api = client.CoordinationV1Api(api_client(cluster))
    name = f"lease-{time.time_ns()}"
    first, second = (Lease(api, "default", name, identity) for identity in ("replica-a", "replica-b"))
    assert first.try_acquire() is True
    assert second.try_acquire() is False
    assert first.try_acquire() is True  # renewal
    first.release()
    assert second.try_acquire() is True
    assert first.try_acquire() is False


def test_an_expired_lease_is_taken_over(cluster: ControlPlane) -> None:
    api = client.CoordinationV1Api(api_client(cluster))
    name = f"lease-{time.time_ns()}"
    crashed = Lease(api, "default", name, "crashed", duration=1)
    assert crashed.try_acquire()
    time.sleep(2.2)  # lease times have whole-second precision on the wire
    assert Lease(api, "default", name, "survivor", duration=1).try_acquire()
