"""The shared contract: release ids and derived names."""

from __future__ import annotations

import pytest

from customer_friendly import contract as c


@pytest.mark.parametrize("release", ["v1", "2026.11.21-1", "a" * 63, "R_1.2-rc3", "0"])
def test_valid_release_ids(release: str) -> None:
    assert c.is_release_id(release)


@pytest.mark.parametrize("release", ["", "-v1", ".hidden", "a" * 64, "v1/../x", "v 1", "v1\n", "ünïcode"])
def test_invalid_release_ids(release: str) -> None:
    assert not c.is_release_id(release)


def test_the_release_configmap_name_is_derived_from_the_deployment() -> None:
    assert c.release_configmap_name("web") == "web-cfo-release"


def test_a_long_deployment_name_still_gives_a_valid_unique_configmap_name() -> None:
    a, b = c.release_configmap_name("x" * 250), c.release_configmap_name("x" * 249 + "y")
    assert len(a) <= 253 and len(b) <= 253 and a != b
